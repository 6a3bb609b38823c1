"""Audio outputs: the sound device through sounddevice (PortAudio), and a null output.

Owns the device stream and its real-time callback. The callback never blocks, allocates or
raises: it asks the player's `AudioFeed` to fill the buffer (silence when there is nothing) and
passes the device's latency so the feed can set the master clock to what is being heard now.
The null output drains the feed in real time from a thread, so headless runs take the same path.
"""

from __future__ import annotations

import threading
import time

import numpy as np

NULL_BLOCK = 480  # samples per null-output period: 10 ms at 48 kHz, like a typical device period


class AudioUnavailable(Exception):
    """No usable sound output; the message is one line saying what is missing and how to get it."""


def _import_sounddevice():
    try:
        import sounddevice as sd
    except OSError:
        raise AudioUnavailable("no sound: the PortAudio library is missing (Debian/Ubuntu: apt-get install libportaudio2)") from None
    return sd


def _pick_device(sd) -> int | None:
    """The default output if it works, else the first device with output channels (e.g. JACK)."""
    try:
        devices = sd.query_devices()
    except Exception as e:  # PortAudio reports host errors in many ways
        raise AudioUnavailable(f"no sound: PortAudio cannot list devices ({e})") from None
    default = sd.default.device[1] if isinstance(sd.default.device, (list, tuple)) else sd.default.device
    if isinstance(default, int) and default >= 0 and devices[default]["max_output_channels"] > 0:
        return default
    for i, d in enumerate(devices):
        if d["max_output_channels"] > 0:
            return i
    raise AudioUnavailable("no sound: PortAudio found no output device (no sound card, no JACK/PulseAudio server)")


class SoundOutput:
    """sounddevice.OutputStream feeding from `feed.fill(out, latency_s, at)`."""

    def __init__(self, rate: int, channels: int, feed):
        sd = _import_sounddevice()
        self.feed = feed
        self.underflows = 0
        device = _pick_device(sd)
        try:
            self.stream = sd.OutputStream(samplerate=rate, channels=channels, dtype="float32", device=device,
                                          latency="low", callback=self._callback)
        except Exception as e:
            raise AudioUnavailable(f"no sound: cannot open the output device ({str(e).splitlines()[0]})") from None
        self.name = sd.query_devices(device)["name"]

    def _callback(self, outdata, frames, time_info, status):
        if status.output_underflow:
            self.underflows += 1
        latency = time_info.outputBufferDacTime - time_info.currentTime
        if not 0.0 <= latency < 1.0:  # some host APIs report no timing: use the stream's figure
            latency = self.stream.latency
        self.feed.fill(outdata, latency, time.monotonic())

    def start(self) -> None:
        self.stream.start()

    def close(self) -> None:
        try:
            self.stream.stop()
        finally:
            self.stream.close()


class NullSound:
    """Drains the feed at real time from a thread, as a device would."""

    def __init__(self, rate: int, channels: int, feed):
        self.rate, self.feed = rate, feed
        self.underflows = 0
        self.name = "null"
        self._buf = np.zeros((NULL_BLOCK, channels), np.float32)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="null-audio", daemon=True)

    def _run(self) -> None:
        period = NULL_BLOCK / self.rate
        t = time.monotonic()
        while not self._stop.is_set():
            self.feed.fill(self._buf, 0.0, time.monotonic())
            t += period
            delay = t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.2:  # the process was stalled: resynchronise instead of bursting
                t = time.monotonic()

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)
