"""The networks and what describes them: configuration (JSON beside the weights), the class-conditional UNet and
the diagnostic classifier, checkpoints that never unpickle.
"""
