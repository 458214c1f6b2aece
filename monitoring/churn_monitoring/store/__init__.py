"""The prediction store: every logged prediction, the labels fed back for them, and their migrations."""
