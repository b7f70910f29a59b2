"""laneway: an agent-conversation server whose long runs never starve its short requests."""

from laneway.lanes import Lane, LaneFull, LaneOrderError, Lanes, LanesConfig, LaneSnapshot

__all__ = ["Lane", "LaneFull", "LaneOrderError", "LaneSnapshot", "Lanes", "LanesConfig"]
__version__ = "0.1.0"
