"""Subscribers of the observer: logs now; metrics and the status page are hooks too."""
