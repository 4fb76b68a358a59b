"""The field workflow: procedures, cases, stages and the stop guard, as a pure state machine (no IO)."""
