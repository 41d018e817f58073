"""The aspects of the twin: importing this package registers their handlers."""

from twin.fold.aspects import (  # noqa: F401
    charging,
    connectivity,
    energy,
    evse,
    identity,
    monitoring,
    operations,
    reservations,
    security,
    tariffs,
)
