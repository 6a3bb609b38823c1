"""Races between the player's threads, each forced deterministically (a patched method does the racing
action at the critical point), and the frame-step and end-of-stream logic they exposed."""

from __future__ import annotations

import threading
import time

import numpy as np

from media import read_frame_index
from test_player import play, weights  # noqa: F401  (fixture)


# 1 ---------------------------------------------------------------------------------------------
def test_restart_sound_drops_the_chunk_the_audio_decoder_was_blocked_on(tmp_path, weights, clip):
    """restart_sound (the compositor's, after a wait for frames that left the clock ahead) clears
    the audio queue; the audio decoder, blocked in put() on a chunk far ahead (the queue is full:
    any file longer than AUDIO_QUEUE_S), is woken by the clear and appends that chunk — same epoch,
    same speed, so the feed takes it as the restarted sound."""
    def setup(p):
        p.audio_q.maxsize = 8  # ~0.17 s: the decoder sits in put() as it does on files over 10 s
        put = p.feed.tap.put

        def heard(pts, pcm):
            p.heard.append((pts, pts + len(pcm) / 48000))
            put(pts, pcm)

        p.heard = []
        p.feed.tap.put = heard
        loop_and_end, done = p._loop_and_end, []

        def restart_once():
            if not done and p.frames_presented >= 20:
                done.append(True)
                p.restart_sound(p.epoch)  # what CompositorThread._loop does at the end of such a wait
            loop_and_end()

        p._loop_and_end = restart_once

    p, shown, stats = play(tmp_path, weights, clip, duration=1.5, mode="live", setup=setup)
    jumps = [(round(a[1], 3), round(b[0], 3)) for a, b in zip(p.heard, p.heard[1:])
             if b[0] > a[1] + 0.002 or b[0] < a[1] - 0.022]
    assert not jumps, f"sound jumped (end of a piece, start of the next): {jumps}"


# 2 ---------------------------------------------------------------------------------------------
def test_a_speed_change_restarts_the_sound_where_it_was_output(tmp_path, weights, clip):
    """set_speed changes the clock's speed before restart_sound asks feed.started, which compares
    with the clock's (new) speed: always False, so the sound restarts at clock.now() (what is
    heard) instead of played_to (what was output): the device latency is heard twice."""
    def setup(p):
        fill = p.feed.fill
        p.feed.fill = lambda out, latency, at: fill(out, 0.1, at)  # a device with 100 ms of latency
        put = p.feed.tap.put
        p.heard = []

        def heard(pts, pcm):
            p.heard.append((p.clock.speed, pts, pts + len(pcm) / 48000))
            put(pts, pcm)

        p.feed.tap.put = heard

    p, _, _ = play(tmp_path, weights, clip, script=[(0.8, "set speed 2")], duration=1.4, mode="live", setup=setup)
    back = [(round(a[2], 3), round(b[1], 3)) for a, b in zip(p.heard, p.heard[1:]) if b[1] < a[2] - 0.022]
    assert not back, f"sound heard twice after the speed change (end, restart): {back}"


# 3 ---------------------------------------------------------------------------------------------
def test_a_seek_after_the_compositors_epoch_check_does_not_freeze_playback(tmp_path, weights, clip):
    """The compositor drops `current` when its epoch is stale at the top of its loop, then peeks.
    A seek (and the worker's first frame of it) landing between the two: the new epoch's first
    frame is presented through the playing path, with `current` still set — the clock, paused by
    the seek, is never resumed."""
    def setup(p):
        peek, done = p.ready_q.peek, []

        def peek_after_seek():
            item = peek()
            if (not done and threading.current_thread() is p.compositor and item is not None
                    and getattr(item, "frame", None) is not None and item.frame.pts >= 0.5):
                done.append(True)
                p.seek(2.0)  # lands after the compositor's epoch check ...
                deadline = time.monotonic() + 3.0
                while time.monotonic() < deadline:  # ... and the worker prepares the first frame
                    item = peek()
                    if item is not None and getattr(item, "frame", None) is not None and item.frame.epoch == p.epoch:
                        break
                    if item is not None and getattr(item, "frame", None) is not None:
                        p.ready_q.pop_if_head(item)  # a stale one (put after the clear): as _next drops it
                    time.sleep(0.002)
            return item

        p.ready_q.peek = peek_after_seek

    p, shown, _ = play(tmp_path, weights, clip, duration=1.5, mode="live", setup=setup)
    after = [s for s in shown if s.epoch == 1]
    assert len(after) > 10, f"{len(after)} frame(s) after the seek; clock paused: {p.clock.paused}, now {p.clock.now():.3f}"


# 4 ---------------------------------------------------------------------------------------------
def test_a_seek_during_the_prerolls_blend_keeps_the_clock_waiting(tmp_path, weights, clip):
    """The compositor ended a wait for frames with clock.set_paused(p.paused) after the blend; a seek
    made during that blend (after p.paused was read) paused the clock for the new epoch, and the
    compositor unpaused it: the new position's sound started before its first frame was blended.
    The seek is made here just before the compositor's call that ends the wait."""
    def setup(p):
        present, marks = p.compositor._present, {}
        p.marks = marks

        def present_marked(prep):
            present(prep)
            if prep.frame.epoch == 2 and "first2" not in marks:
                marks["first2"] = time.monotonic()

        p.compositor._present = present_marked
        put = p.feed.tap.put

        def heard(pts, pcm):
            if p.epoch == 2 and "heard2" not in marks:
                marks["heard2"] = time.monotonic()
            put(pts, pcm)

        p.feed.tap.put = heard
        set_waiting = p.clock.set_waiting

        def tapped(waiting, epoch=None):
            # the compositor's call that ends the wait after the script's seek (epoch 1)
            if not waiting and threading.current_thread() is p.compositor and p.epoch == 1 and "seek" not in marks:
                marks["seek"] = time.monotonic()
                p.seek(2.0)  # the user's next seek (scrubbing: one every 0.1 s), during that blend
            set_waiting(waiting, epoch)

        p.clock.set_waiting = tapped

    p, shown, _ = play(tmp_path, weights, clip, script=[(0.5, "seek 1.0 absolute")], duration=1.5, mode="live",
                       setup=setup)
    m = p.marks
    assert "seek" in m and "first2" in m and "heard2" in m, m
    assert m["heard2"] >= m["first2"] - 0.005, \
        f"sound of the seek heard {1000 * (m['first2'] - m['heard2']):.0f} ms before its first frame was blended"


# 5 ---------------------------------------------------------------------------------------------
def test_a_seek_as_the_stream_ends_is_not_undone_by_the_old_end(tmp_path, weights, clip):
    """The compositor takes the end of the stream of the current epoch, then calls
    on_end_of_stream; a seek in between resets `_ended`, which the stale end then sets again:
    with a loop the player seeks straight back to A (the user's seek is lost)."""
    def setup(p):
        on_end, done = p.on_end_of_stream, []

        def seek_then_end(eos):
            if not done:
                done.append(True)
                p.seek(2.5)  # the user's seek, between the compositor's epoch check and this call
            on_end(eos)

        p.on_end_of_stream = seek_then_end

    p, shown, _ = play(tmp_path, weights, clip, loop=(2.0, 10.0), duration=1.8, mode="live", setup=setup)
    sought = [s for s in shown if s.epoch == 1]
    assert len(sought) >= 10, f"{len(sought)} frames from the seek to 2.5 before the player went back to A " \
                              f"(epochs shown: {sorted({s.epoch for s in shown})})"


# 6 ---------------------------------------------------------------------------------------------
def test_frame_step_right_after_a_seek_steps_from_the_seek(tmp_path, weights, clip):
    """frame-step before the seek's first frame is shown steps from `last`, a frame of the old
    epoch: the player seeks back next to where it was, and the user's seek is lost."""
    p, shown, _ = play(tmp_path, weights, clip, script=[(0.5, "seek 2.0 absolute; frame-step")], duration=1.2,
                       mode="live")
    final = read_frame_index(shown[-1].original)
    assert final in (60, 61), f"after 'seek 2.0; frame-step' the player shows frame #{final}"


# 7 ---------------------------------------------------------------------------------------------
def test_two_frame_steps_advance_two_frames(tmp_path, weights, clip):
    """Two frame-steps before the compositor takes the first: `_step` is one flag, and `last` is not
    the stepped frame yet — the second step is lost (or re-seeks to the first one's frame)."""
    before = []

    def setup(p):
        command = p.command

        def marked(cmd):
            if cmd.startswith("frame-step") and not before:
                before.append(read_frame_index(p.last.frame.rgb))
            command(cmd)

        p.command = marked

    script = [(0.5, "cycle pause"), (0.8, "frame-step; frame-step")]
    p, shown, _ = play(tmp_path, weights, clip, script=script, duration=1.3, setup=setup)
    final = read_frame_index(shown[-1].original)
    assert final == before[0] + 2, f"on screen before the steps #{before[0]}, after two steps #{final}"


# 8 ---------------------------------------------------------------------------------------------
def test_early_drop_says_it_took_the_frame(tmp_path, weights, clip):
    """_admit's contract: True when the frame was dropped; it returns None, and the loop then
    waits (0.005 s, or up to 0.1 s for the head's inference) with a lane free."""
    from player import worker as wk
    from player.frames import VideoFrame

    class P:
        pass

    class C:
        epoch, paused, speed = 0, False, 1.0

        def now(self):
            return 10.0

    p = P()
    p.clock, p.loop, p.frames_presented_epoch = C(), (None, None), 1
    p.compositor = P()
    p.compositor.blend_ms = []
    from player.queues import ClosableQueue

    den = P()  # never asked for inference here: only its config (no monochrome backbone)
    den.cfg = P()
    den.cfg.mono = False
    w = wk.BackboneWorker(den, ClosableQueue(4), ClosableQueue(3), p, "live", 1 << 20)
    late = VideoFrame(index=0, pts=1.0, duration=1 / 30, rgb=np.zeros((2, 2, 3), np.uint8), epoch=0)
    assert w._admit(late, None) is True and w.dropped_early == 1




def test_the_compositor_never_blends_into_a_frame_the_main_thread_is_showing(tmp_path, weights, clip):
    """Four rotating output buffers, taken blindly: a display slower than four blends (a stall, a
    4K frame) had the frame it was drawing or recording overwritten under it."""
    torn = []

    def setup(p):
        show = p.window.show

        def slow_show(original, tuned, **kw):
            before = tuned.copy()
            time.sleep(0.2)  # the compositor blends (and replaces unshown frames in the slot) meanwhile
            if not np.array_equal(before, tuned):
                torn.append(p.frames_presented)
            show(original, tuned, **kw)

        p.window.show = slow_show

    p, shown, stats = play(tmp_path, weights, clip, duration=1.2, mode="live", script=[(0.0, "set strength 20")], setup=setup)
    assert stats["frames_dropped_late"] > 4 and len(shown) >= 4  # blends went on while the display slept
    assert not torn, f"frames overwritten while shown: {torn}"
