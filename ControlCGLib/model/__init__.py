"""The networks and what describes them, stored as data that loading never unpickles."""
