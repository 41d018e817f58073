"""The fold of the frame log into twins (see ``engine``); the aspects register themselves."""

from twin.fold import aspects  # noqa: F401  - registers every aspect's handlers
from twin.fold.engine import Twin, apply, fold, folded_actions, new_twin, public

__all__ = ["Twin", "apply", "fold", "folded_actions", "new_twin", "public"]
