"""Buttons, LED and buzzer through gpiozero: the officer's side of the field workflow.

- ``config``: ``ControlsConfig`` (pins, pull-ups, bounce and hold times) and ``from_mapping`` for the
  ``[controls]`` table of the daemon's config file;
- ``pins``: choosing gpiozero's pin factory (config or ``$GPIOZERO_PIN_FACTORY``; ``mock`` for tests);
- ``buttons``: ``ButtonPanel``, gpiozero buttons -> ``Press`` events (short, long, debounced);
- ``feedback``: ``FeedbackDriver``, ``FeedbackEffect`` -> LED blinks and buzzer beeps.
"""
