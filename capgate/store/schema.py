"""The schema's history, one list for both backends: version N is the same schema on SQLite and on
PostgreSQL, in each one's types. Append, never edit a released version.

PostgreSQL's types: BIGINT ids and money, DOUBLE PRECISION times, BYTEA images, BOOLEAN flags. JSON
stays TEXT on both, so both keep one shape and one set of statements.

1. The tables.
2. Pingback delivery state.
3. Running counts of pending tasks (per account and service-wide) kept by triggers, so that a submit
   checks the thread cap and the queue cap in O(1). SQLite only: its single writer makes a counter
   row free, where PostgreSQL's concurrent processes would all queue on it (they count under the
   account's row lock instead, see ``sql.py``).
4. Partial task indexes: the queue indexes hold pending tasks only, the retention index only tasks
   waiting to expire. A submit and a settle touch fewer index entries (a fifth less of SQLite's writer
   time per sandbox task, measured) and the sweeper no longer walks every task ever expired.
   PostgreSQL databases of the releases before this history was shared were at their version 3 with
   these same indexes; their step here is written to run again harmlessly.
5. Which worker token holds a task's lease (``lease_worker``): only that token may answer, renew or
   give back the task, whoever else learns its lease.
6. Admin tokens (the admin API and dashboard), stored hashed as worker tokens are, and the dashboard's
   sign-in sessions (hashed too; a session ends with its token). No index for the admin's task search:
   every submit would pay for one, and a search is rare.

Several processes may open one database at once: the versions are read and applied inside one write
transaction (SQLite's ``BEGIN IMMEDIATE``, PostgreSQL's advisory lock), so exactly one applies them.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Literal

from capgate.store.sql import Dialect, Script, one, run


@dataclass(frozen=True)
class Migration:
    sqlite: str
    postgres: str

    def statements(self, dialect: Dialect) -> list[str]:
        """The version's statements, to run one at a time (a trigger's body holds semicolons)."""
        script = self.sqlite if dialect is Dialect.SQLITE else self.postgres
        statements, current = [], ""
        for line in script.splitlines(keepends=True):
            current += line
            if sqlite3.complete_statement(current):
                statements.append(current.strip())
                current = ""
        return [s for s in statements if s]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        sqlite="""
    CREATE TABLE accounts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        key_hash TEXT NOT NULL UNIQUE,
        key_prefix TEXT NOT NULL,
        threads INTEGER NOT NULL,
        balance INTEGER NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0,
        sandbox INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        settings TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE ledger (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        task_id INTEGER REFERENCES tasks(id),
        kind TEXT NOT NULL,
        amount INTEGER NOT NULL,
        balance_after INTEGER NOT NULL,
        created_at REAL NOT NULL,
        note TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX ledger_account ON ledger (account_id, id);
    CREATE TABLE tasks (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        method TEXT NOT NULL,
        params TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        state TEXT NOT NULL,
        pool TEXT NOT NULL,
        price INTEGER NOT NULL,
        created_at REAL NOT NULL,
        deadline_at REAL NOT NULL,
        not_before REAL NOT NULL,
        answer TEXT,
        error TEXT,
        settled_at REAL,
        report TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_until REAL,
        confidence REAL,
        pingback TEXT
    );
    CREATE INDEX tasks_account_pending ON tasks (account_id, state, fingerprint);
    CREATE INDEX tasks_queue ON tasks (state, pool, method, not_before);
    CREATE INDEX tasks_settled ON tasks (state, settled_at);
    CREATE TABLE task_blobs (
        task_id INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (task_id, name)
    );
    CREATE TABLE ip_strikes (ip TEXT NOT NULL, at REAL NOT NULL);
    CREATE INDEX ip_strikes_ip ON ip_strikes (ip, at);
    CREATE TABLE ip_bans (ip TEXT PRIMARY KEY, until REAL NOT NULL);
    CREATE TABLE pingback_hosts (
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        host TEXT NOT NULL,
        PRIMARY KEY (account_id, host)
    );
    CREATE TABLE workers (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        token_prefix TEXT NOT NULL,
        methods TEXT NOT NULL,
        human INTEGER NOT NULL DEFAULT 0,
        disabled INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        last_seen REAL,
        serving TEXT
    );
    """,
        postgres="""
    CREATE TABLE accounts (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        key_hash TEXT NOT NULL UNIQUE,
        key_prefix TEXT NOT NULL,
        threads INTEGER NOT NULL,
        balance BIGINT NOT NULL,
        disabled BOOLEAN NOT NULL DEFAULT FALSE,
        sandbox BOOLEAN NOT NULL DEFAULT FALSE,
        created_at DOUBLE PRECISION NOT NULL,
        settings TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE tasks (
        id BIGINT PRIMARY KEY,
        account_id BIGINT NOT NULL REFERENCES accounts(id),
        method TEXT NOT NULL,
        params TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        state TEXT NOT NULL,
        pool TEXT NOT NULL,
        price BIGINT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        deadline_at DOUBLE PRECISION NOT NULL,
        not_before DOUBLE PRECISION NOT NULL,
        answer TEXT,
        error TEXT,
        settled_at DOUBLE PRECISION,
        report TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_until DOUBLE PRECISION,
        confidence DOUBLE PRECISION,
        pingback TEXT
    );
    CREATE INDEX tasks_account_pending ON tasks (account_id, state, fingerprint);
    CREATE INDEX tasks_queue ON tasks (state, pool, method, not_before);
    CREATE INDEX tasks_settled ON tasks (state, settled_at);
    CREATE TABLE ledger (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        account_id BIGINT NOT NULL REFERENCES accounts(id),
        task_id BIGINT REFERENCES tasks(id),
        kind TEXT NOT NULL,
        amount BIGINT NOT NULL,
        balance_after BIGINT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        note TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX ledger_account ON ledger (account_id, id);
    CREATE TABLE task_blobs (
        task_id BIGINT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        data BYTEA NOT NULL,
        PRIMARY KEY (task_id, name)
    );
    CREATE TABLE ip_strikes (ip TEXT NOT NULL, at DOUBLE PRECISION NOT NULL);
    CREATE INDEX ip_strikes_ip ON ip_strikes (ip, at);
    CREATE TABLE ip_bans (ip TEXT PRIMARY KEY, until DOUBLE PRECISION NOT NULL);
    CREATE TABLE pingback_hosts (
        account_id BIGINT NOT NULL REFERENCES accounts(id),
        host TEXT NOT NULL,
        PRIMARY KEY (account_id, host)
    );
    CREATE TABLE workers (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        name TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        token_prefix TEXT NOT NULL,
        methods TEXT NOT NULL,
        human BOOLEAN NOT NULL DEFAULT FALSE,
        disabled BOOLEAN NOT NULL DEFAULT FALSE,
        created_at DOUBLE PRECISION NOT NULL,
        last_seen DOUBLE PRECISION,
        serving TEXT
    );
    """,
    ),
    Migration(
        sqlite="""
    ALTER TABLE tasks ADD COLUMN pingback_attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE tasks ADD COLUMN pingback_next REAL;
    ALTER TABLE tasks ADD COLUMN pingback_done INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX tasks_pingback ON tasks (pingback_done, pingback_next) WHERE pingback IS NOT NULL;
    """,
        postgres="""
    ALTER TABLE tasks ADD COLUMN pingback_attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE tasks ADD COLUMN pingback_next DOUBLE PRECISION;
    ALTER TABLE tasks ADD COLUMN pingback_done INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX tasks_pingback ON tasks (pingback_done, pingback_next) WHERE pingback IS NOT NULL;
    """,
    ),
    Migration(
        sqlite="""
    ALTER TABLE accounts ADD COLUMN pending_count INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE accounts ADD COLUMN pending_reserved INTEGER NOT NULL DEFAULT 0;
    UPDATE accounts SET
        pending_count = (SELECT COUNT(*) FROM tasks WHERE tasks.account_id = accounts.id AND state = 'pending'),
        pending_reserved = (SELECT COALESCE(SUM(price), 0) FROM tasks
                            WHERE tasks.account_id = accounts.id AND state = 'pending');
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO counters VALUES ('pending', (SELECT COUNT(*) FROM tasks WHERE state = 'pending'));
    CREATE TRIGGER tasks_pending_in AFTER INSERT ON tasks WHEN NEW.state = 'pending' BEGIN
        UPDATE accounts SET pending_count = pending_count + 1, pending_reserved = pending_reserved + NEW.price
            WHERE id = NEW.account_id;
        UPDATE counters SET value = value + 1 WHERE name = 'pending';
    END;
    CREATE TRIGGER tasks_pending_out AFTER UPDATE OF state ON tasks
    WHEN OLD.state = 'pending' AND NEW.state != 'pending' BEGIN
        UPDATE accounts SET pending_count = pending_count - 1, pending_reserved = pending_reserved - OLD.price
            WHERE id = OLD.account_id;
        UPDATE counters SET value = value - 1 WHERE name = 'pending';
    END;
    CREATE INDEX tasks_due ON tasks (state, pool, not_before, created_at);
    """,
        postgres="""""",
    ),
    Migration(
        sqlite="""
    DROP INDEX tasks_account_pending;
    CREATE INDEX tasks_account_pending ON tasks (account_id, fingerprint) WHERE state = 'pending';
    DROP INDEX tasks_queue;
    CREATE INDEX tasks_queue ON tasks (pool, method, not_before) WHERE state = 'pending';
    DROP INDEX tasks_due;
    CREATE INDEX tasks_due ON tasks (pool, not_before, created_at) WHERE state = 'pending';
    DROP INDEX tasks_settled;
    CREATE INDEX tasks_settled ON tasks (settled_at) WHERE state IN ('solved', 'unsolvable');
    """,
        postgres="""
    DROP INDEX IF EXISTS tasks_account_pending;
    CREATE INDEX tasks_account_pending ON tasks (account_id, fingerprint) WHERE state = 'pending';
    DROP INDEX IF EXISTS tasks_queue;
    CREATE INDEX tasks_queue ON tasks (pool, method, not_before) WHERE state = 'pending';
    DROP INDEX IF EXISTS tasks_due;
    CREATE INDEX tasks_due ON tasks (pool, not_before, created_at) WHERE state = 'pending';
    DROP INDEX IF EXISTS tasks_settled;
    CREATE INDEX tasks_settled ON tasks (settled_at) WHERE state IN ('solved', 'unsolvable');
    """,
    ),
    Migration(
        sqlite="""
    ALTER TABLE tasks ADD COLUMN lease_worker INTEGER;
    """,
        postgres="""
    ALTER TABLE tasks ADD COLUMN lease_worker BIGINT;
    """,
    ),
    Migration(
        sqlite="""
    CREATE TABLE admin_tokens (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        token_prefix TEXT NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    );
    CREATE TABLE admin_sessions (
        session_hash TEXT PRIMARY KEY,
        token_id INTEGER NOT NULL REFERENCES admin_tokens(id) ON DELETE CASCADE,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    """,
        postgres="""
    CREATE TABLE admin_tokens (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        name TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        token_prefix TEXT NOT NULL,
        disabled BOOLEAN NOT NULL DEFAULT FALSE,
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE admin_sessions (
        session_hash TEXT PRIMARY KEY,
        token_id BIGINT NOT NULL REFERENCES admin_tokens(id) ON DELETE CASCADE,
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL
    );
    """,
    ),
)
VERSION = len(MIGRATIONS)


def migrate(dialect: Dialect) -> Script[int]:
    """Bring the schema up to date in the caller's transaction; the version it is now at."""
    yield one("{migration_lock}")
    yield run("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = yield one("SELECT COALESCE(MAX(version), 0) AS v FROM schema_version")
    current = int(row["v"])
    for version, migration in enumerate(MIGRATIONS, start=1):
        if version > current:
            for statement in migration.statements(dialect):
                yield run(statement)
            yield run("INSERT INTO schema_version (version) VALUES (?)", version)
            current = version
    return current


# ------------------------------------------------------------------------------------ explicit upgrades
# A store opens its database in one of these ways (``open_store(db, schema=…)``):
#   "upgrade": bring the schema up to date (``capgate db upgrade``; tests and tools that own their file);
#   "check": create the schema of a new, empty database, and refuse one that is behind or ahead of
#            this capgate (``serve``, every command an operator runs day to day);
#   "inspect": neither: only read the version (``capgate db status``).
SchemaMode = Literal["upgrade", "check", "inspect"]
UPGRADE_COMMAND = "capgate db upgrade"


class SchemaMismatch(Exception):
    """The database's schema is not the one this capgate runs on; the message says what to do."""

    def __init__(self, found: int, wanted: int = VERSION) -> None:
        self.found, self.wanted = found, wanted
        if found < wanted:
            text = (f"the database's schema is at version {found}, this capgate needs version {wanted}: "
                    f"run '{UPGRADE_COMMAND}' (with the same --db or CAPGATE_DB) first")
        else:
            text = (f"the database's schema is at version {found}, newer than this capgate knows ({wanted}): "
                    "run the capgate release that upgraded it, or a later one")
        super().__init__(text)


_HAS_VERSION_TABLE = {
    Dialect.SQLITE: "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
    # The table the unqualified name finds on the search path, as every other statement does.
    Dialect.POSTGRES: "SELECT COUNT(to_regclass('schema_version')) AS n",
}


def current_version(dialect: Dialect) -> Script[int]:
    """The database's schema version; 0 for a database capgate never wrote to."""
    found = yield one(_HAS_VERSION_TABLE[dialect])
    if not int(found["n"]):
        return 0
    row = yield one("SELECT COALESCE(MAX(version), 0) AS v FROM schema_version")
    return int(row["v"])


def prepare(dialect: Dialect, mode: SchemaMode) -> Script[tuple[int, int]]:
    """Open the schema as ``mode`` says, in the caller's transaction: (the version found, the version
    now). "check" and "upgrade" hold the migration lock, so of several processes opening one new
    database at once exactly one creates it and the others find it made."""
    if mode == "inspect":
        found = yield from current_version(dialect)
        return found, found
    yield one("{migration_lock}")
    found = yield from current_version(dialect)
    if mode == "upgrade" or found == 0:
        return found, (yield from migrate(dialect))
    return found, found


def require_current(version: int) -> None:
    """Raise :class:`SchemaMismatch` unless ``version`` is this capgate's."""
    if version != VERSION:
        raise SchemaMismatch(version)
