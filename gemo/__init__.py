"""gemo: group emotion recognition in video clips (Positive, Neutral, Negative)."""

__version__ = "0.1.0"
