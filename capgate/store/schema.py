"""Schema migrations, applied in order; each entry is one version. Append, never edit.

Version 3 keeps running counts of pending tasks (per account, and service-wide) in triggers, so a
submit checks the thread cap and the queue cap in O(1) instead of counting every pending task.

Version 4 makes the task indexes partial: the queue indexes hold pending tasks only, the retention
index only tasks waiting to expire. A submit and a settle then touch fewer index entries (a fifth
less of the writer's time per sandbox task, measured), and the sweeper's retention pass no longer
walks every task ever expired.
"""

from __future__ import annotations

SQLITE_MIGRATIONS: tuple[str, ...] = (
    """
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
    """
    ALTER TABLE tasks ADD COLUMN pingback_attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE tasks ADD COLUMN pingback_next REAL;
    ALTER TABLE tasks ADD COLUMN pingback_done INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX tasks_pingback ON tasks (pingback_done, pingback_next) WHERE pingback IS NOT NULL;
    """,
    """
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
    """
    DROP INDEX tasks_account_pending;
    CREATE INDEX tasks_account_pending ON tasks (account_id, fingerprint) WHERE state = 'pending';
    DROP INDEX tasks_queue;
    CREATE INDEX tasks_queue ON tasks (pool, method, not_before) WHERE state = 'pending';
    DROP INDEX tasks_due;
    CREATE INDEX tasks_due ON tasks (pool, not_before, created_at) WHERE state = 'pending';
    DROP INDEX tasks_settled;
    CREATE INDEX tasks_settled ON tasks (settled_at) WHERE state IN ('solved', 'unsolvable');
    """,
)
