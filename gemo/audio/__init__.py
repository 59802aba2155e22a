"""Audio networks behind the learned audio feature sets (``openl3``)."""
