"""The Faust stream worker: folds ocpp.frames into twins, publishes twin.state and
twin.alerts, serves the HTTP API. ``twin worker`` runs it."""
