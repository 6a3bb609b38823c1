"""Where the player's frames go.

* :mod:`player.outputs.window` -- the pygame window (views, HUD, help page,
  events) and its display-less twin ``NullWindow``.

Nothing is imported here, so importing one output does not pull in another's
dependencies (pygame, sounddevice, ...).
"""
