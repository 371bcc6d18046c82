"""Which model ``capgate train`` ships: the distilled student, or the teacher it learnt from.

The student is several times faster, but it may only replace the teacher when it reads about as
well. Fifty held-out labels can't show that: a student that read all 50 read 97% of 300 other images
of its family (issue 16). So the student is also compared with the teacher on a large pool: every
unlabelled image the teacher labelled (the ones the student learnt from, and any kept back from it),
thousands where the family has them. Those images have no labels, so each one where the two
disagree is counted as a student error: the estimate of how far the student is below the teacher
can only be too high, never too low. On the held-out labels the true difference is counted.

The student ships when that estimate is at most :data:`TOLERANCE_POINTS` percentage points of all
the images compared; otherwise the teacher ships. Below about 333 images (1 / 0.3%) that means no
image may be lost at all.

Needs no PyTorch, so that the rule itself is tested anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

#: How far below its teacher, in percentage points, a student may read and still ship.
TOLERANCE_POINTS = 0.3


@dataclass(frozen=True)
class Agreement:
    """What the two candidates read, counted over the same images."""

    holdout: int  # labelled images held out from training
    teacher_correct: int  # of them, read right by the teacher
    student_correct: int  # ... and by the student
    pool: int  # unlabelled images the teacher labelled, read by both
    agreed: int  # of them, read the same by both
    pool_unseen: int = 0  # of ``pool``, images the student never learnt from
    agreed_unseen: int = 0  # ... and of them, read the same by both

    def __post_init__(self) -> None:
        if not (
            0 <= self.teacher_correct <= self.holdout
            and 0 <= self.student_correct <= self.holdout
            and 0 <= self.agreed <= self.pool
            and 0 <= self.agreed_unseen <= self.pool_unseen <= self.pool
            and self.agreed_unseen <= self.agreed
        ):
            raise ValueError(f"inconsistent counts: {self}")

    @property
    def images(self) -> int:
        return self.holdout + self.pool

    @property
    def lost(self) -> int:
        """Images the student may read worse than the teacher: every disagreement on the pool, plus
        the held-out labels' true difference (negative where the student reads more of them)."""
        return (self.pool - self.agreed) + (self.teacher_correct - self.student_correct)

    @property
    def points_below(self) -> float:
        """The estimate, in percentage points of every image compared, of how far below the teacher
        the student reads (at most; negative when it reads more of the labelled ones)."""
        return 100.0 * self.lost / self.images if self.images else 0.0


@dataclass(frozen=True)
class ShipDecision:
    shipped: Literal["teacher", "student"]
    reason: str  # one sentence, for the command's output and the profile's metadata
    points_below: float | None  # None when no student was trained

    def as_metrics(self) -> dict[str, Any]:
        return {
            "shipped": self.shipped,
            "ship_reason": self.reason,
            "ship_rule": f"student if at most {TOLERANCE_POINTS} points below the teacher "
            "(pool disagreements counted as student errors)",
            "student_points_below": None if self.points_below is None else round(self.points_below, 3),
        }


def no_student(why: str = "teacher: no student was trained (--no-distill)") -> ShipDecision:
    return ShipDecision("teacher", why, None)


def decide(counts: Agreement, tolerance_points: float = TOLERANCE_POINTS) -> ShipDecision:
    """Ship the student only when it reads within ``tolerance_points`` of the teacher, as estimated
    over the held-out labels and the whole agreement pool together."""
    points = counts.points_below
    # Compared in whole images so that rounding can't let a real loss through.
    allowed = int(tolerance_points / 100.0 * counts.images + 1e-9)
    seen = counts.pool - counts.pool_unseen
    pool_text = (
        f"it read {counts.agreed:,} of {counts.pool:,} unlabelled images as the teacher did"
        + (
            f" ({counts.agreed_unseen:,} of the {counts.pool_unseen:,} it never learnt from)"
            if counts.pool_unseen and seen
            else ""
        )
        + f" and {counts.student_correct} of {counts.holdout} held-out labels (teacher {counts.teacher_correct})"
    )
    if counts.lost <= allowed:
        bound = f"at most {max(points, 0.0):.2f} points below the teacher, within {tolerance_points}"
        return ShipDecision("student", f"student: {pool_text}, {bound}", points)
    bound = f"possibly {points:.2f} points below the teacher, more than {tolerance_points}"
    return ShipDecision("teacher", f"teacher: {pool_text}, so the student is {bound}", points)
