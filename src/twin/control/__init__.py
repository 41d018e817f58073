"""Adaptive smart charging: the planner (pure), the textbook baselines, the virtual-time
evaluation behind ``twin control simulate``, and the controller process that sends the
plans to stations through ``ocpp.commands``."""
