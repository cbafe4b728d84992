"""Scans as a user brings them, and the template they are registered to: from a T1 in any geometry to the model grid
and back.
"""
