"""ViZDoom-Two-Colors (Sorokin et al. 2022, "Explain My Surprise"; used by RATE), built from this
project's own files, and an oracle from the game's privileged object list.

The task: the agent stands in a closed room whose acid floor drains its health (10 HP every 32
tics).  A tall pillar, red or green, shows the colour of the episode and vanishes after
``pillar_steps`` steps.  Red and green objects (Doom's short pillars) lie around the room; picking one of the pillar's
colour heals 25 HP and pays +1, one of the other colour costs 25 HP and pays -1; each picked object
reappears at a random place, so the room always holds the same number of each.  Every step alive
pays 0.02 (the official config's living reward, 0.01 a tic).  The episode ends when the health
runs out or after ``episode_length`` steps.  Once the pillar is gone, only memory tells which
colour heals.

The scenario comes from text written here, not from a downloaded WAD: a UDMF map (``TEXTMAP``,
which ViZDoom's engine reads and builds nodes for itself), DECORATE actors for the pillar, the
objects and a spawner that scatters them with the game's random generator (seeded per episode by
``reset(seed)``), and a damaging floor sector; :func:`two_colors_wad` packs them into a small
WAD file in a cache folder.  No ACS script is needed: the pillar's colour is the map (MAP01 red,
MAP02 green): the seed's parity for ``reset(seed)`` (even red, so consecutive evaluation seeds
are half red, half green), a random draw for an unseeded reset.  The engine lands the acid's
first hit on the first tic, before the first observation (which shows 90 HP); the spawner gives
those 10 HP back on the next tic, so from step 1 the player has 100 HP as the paper's start, and
the first hit that counts comes 16 steps in.  Differences from the original scenario (whose WAD
and ACS source are not available offline): the room's size and textures, 20 objects of each colour
(the original count is not documented), the -1 reward for a wrong object (the RATE code's wrapper
pays +1 per health gain, or reads a scripted +-1 shaping variable; which one its numbers use is not
stated), the objects' sprites, and pillar and player positions.

Observations: the first-person view rendered at 320 x 180 and resized to 112 x 64 pixels (as the
RATE code feeds it), uint8 (64, 112, 3), no HUD.  Actions (Discrete(5)): 0 turn left, 1 turn
right, 2 forward, 3 forward + left, 4 forward + right; each repeated for ``frame_skip`` tics (2).
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import RecordConstructorArgs

ROOM = 768  # map units; the room spans [0, ROOM] x [0, ROOM]
MARGIN = 64  # objects spawn at least this far from the walls
OBJECTS = 20  # of each colour
HEAL, HURT = 25, 25  # HP an object of the pillar's / the other colour gives / takes
LIVING_REWARD = 0.02  # per step (0.01 per tic, frame skip 2)
FRAME_SKIP = 2
SCREEN = (64, 112)  # (height, width) of the observation
LEFT, RIGHT, FORWARD, FORWARD_LEFT, FORWARD_RIGHT = range(5)
BUTTONS = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [0, 1, 1]]  # TURN_LEFT, TURN_RIGHT, MOVE_FORWARD
COLOURS = ("red", "green")
MAPS = {"red": "MAP01", "green": "MAP02"}
PILLAR_SPRITES = {"red": "COL3", "green": "COL1"}  # Doom's tall red / green pillars
OBJECT_SPRITES = {"red": "COL4", "green": "COL2"}  # short red / green pillars (static sprites)


def _decorate(pillar_tics: int) -> str:
    """DECORATE actors: a pillar per colour that vanishes after ``pillar_tics``, and per map a good
    and a bad object class (the good one counts as an item, so the engine's ITEMCOUNT tells the
    wrapper how many were picked), each respawning at a random place when picked."""
    # A_SpawnItemEx offsets are relative to the spawning actor (SXF_ABSOLUTEPOSITION only stops
    # them from turning with its angle): minus its own x and y makes them a random room position.
    spawn = (f"frandom({MARGIN}, {ROOM - MARGIN}) - x, frandom({MARGIN}, {ROOM - MARGIN}) - y, 0, 0, 0, 0, 0, "
             "SXF_ABSOLUTEPOSITION")
    actors = []
    for number, colour in enumerate(COLOURS):
        # The first frame of a map thing gets a random duration; a 1-tic frame absorbs that.
        actors.append(f"""actor RatePillar_{colour} {21000 + number}
{{
  Radius 16
  Height 52
  +SOLID
  States
  {{
  Spawn:
    {PILLAR_SPRITES[colour]} A 1
    {PILLAR_SPRITES[colour]} A {pillar_tics - 1}
    Stop
  }}
}}""")
        for good in (True, False):
            name = f"RateObject_{colour}_{'good' if good else 'bad'}"
            effect = f"HealThing({HEAL}, 100)" if good else f"A_DamageSelf({HURT})"
            actors.append(f"""actor {name} : CustomInventory
{{
  Radius 20
  Height 16
  {'+COUNTITEM' if good else ''}
  States
  {{
  Spawn:
    {OBJECT_SPRITES[colour]} A -1
    Stop
  Pickup:
    TNT1 A 0 {effect}
    TNT1 A 0 A_SpawnItemEx("{name}", {spawn})
    Stop
  }}
}}""")
    for number, colour in enumerate(COLOURS):
        other = COLOURS[1 - number]
        frames = "A" * OBJECTS
        actors.append(f"""actor RateObjectSpawner_{colour} {21010 + number}
{{
  +NOBLOCKMAP
  +NOSECTOR
  States
  {{
  Spawn:
    TNT1 A 0  // a map thing's first frame runs no action: without it one good object was missing
    TNT1 {frames} 0 A_SpawnItemEx("RateObject_{colour}_good", {spawn})
    TNT1 {frames} 0 A_SpawnItemEx("RateObject_{other}_bad", {spawn})
    TNT1 A 1  // the acid's first hit lands on tic 0, before the first observation: give it back
    TNT1 A 0 A_RadiusGive("Health", {2 * ROOM}, RGF_PLAYERS, 10)
    Stop
  }}
}}""")
    return "\n".join(actors) + "\n"


def _textmap(colour: str) -> str:
    """UDMF map: one square room with an acid floor, the player at the south wall facing north, the
    pillar in the middle of the room, and the object spawner of this colour's map."""
    # Clockwise: a linedef's front (its right side, v1 -> v2) must face into the room.
    corners = [(0, 0), (0, ROOM), (ROOM, ROOM), (ROOM, 0)]
    lines = ['namespace = "zdoom";']
    lines += [f"vertex {{ x = {x}.0; y = {y}.0; }}" for x, y in corners]
    lines += [f"linedef {{ v1 = {i}; v2 = {(i + 1) % 4}; sidefront = {i}; blocking = true; }}" for i in range(4)]
    lines += ['sidedef { sector = 0; texturemiddle = "BRICK7"; }'] * 4
    lines.append('sector { heightfloor = 0; heightceiling = 128; texturefloor = "NUKAGE1"; textureceiling = "CEIL3_5"; '
                 "lightlevel = 224; damageamount = 10; damageinterval = 32; }")
    skills = "skill1 = true; skill2 = true; skill3 = true; skill4 = true; skill5 = true; single = true;"
    number = COLOURS.index(colour)
    for x, y, angle, kind in ((ROOM / 2, 48, 90, 1), (ROOM / 2, ROOM / 2, 0, 21000 + number),
                              (ROOM / 2, ROOM / 2, 0, 21010 + number)):
        lines.append(f"thing {{ x = {x:.1f}; y = {y:.1f}; angle = {angle}; type = {kind}; {skills} }}")
    return "\n".join(lines) + "\n"


def _wad(lumps: list[tuple[str, bytes]]) -> bytes:
    """A PWAD: header, lump data, directory (offset, size, 8-byte name) per lump."""
    body, directory, offset = b"", b"", 12
    for name, data in lumps:
        directory += struct.pack("<ii8s", offset, len(data), name.encode())
        body += data
        offset += len(data)
    return struct.pack("<4sii", b"PWAD", len(lumps), 12 + len(body)) + body + directory


def two_colors_wad(pillar_steps: int, folder: Path | None = None) -> Path:
    """The scenario's WAD for a pillar shown ``pillar_steps`` steps, written once (atomically) into
    ``folder`` (default: a ``rate-vizdoom`` folder in the system's temporary directory) under a
    name that hashes its content.  Returns its path."""
    lumps = []
    for colour in COLOURS:
        lumps += [(MAPS[colour], b""), ("TEXTMAP", _textmap(colour).encode()), ("ENDMAP", b"")]
    lumps.append(("DECORATE", _decorate(pillar_steps * FRAME_SKIP).encode()))
    data = _wad(lumps)
    folder = Path(folder or Path(tempfile.gettempdir()) / "rate-vizdoom")
    path = folder / f"two_colors-{hashlib.sha256(data).hexdigest()[:12]}.wad"
    # Checked, not trusted by its name: the folder is shared (another user's file, a damaged one).
    if not path.is_file() or path.read_bytes() != data:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    return path


class ViZDoomTwoColorsEnv(gym.Env, RecordConstructorArgs):
    """The task in a Gymnasium 1.x environment.  ``info``: ``good`` and ``bad`` objects picked this
    episode.  The pillar's colour and the objects' places are privileged
    (:meth:`privileged_state`), never in an observation."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 35 // FRAME_SKIP}
    length_keywords = ("episode_length",)  # (what evaluation sweeps: rate.rl.from_dataset.length_kwarg_for)

    def __init__(self, episode_length: int = 2100, pillar_steps: int = 45, render_mode: str | None = None):
        if episode_length < 1 or pillar_steps < 1:
            raise ValueError(f"episode_length and pillar_steps must be >= 1, got {episode_length}, {pillar_steps}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        RecordConstructorArgs.__init__(self, episode_length=episode_length, pillar_steps=pillar_steps,
                                       render_mode=render_mode)
        try:
            import vizdoom as vzd  # imported here: registering the id must not need the package
        except ImportError as err:
            raise ImportError(f"rate/ViZDoomTwoColors-v0 needs the vizdoom package (pip install vizdoom, or this "
                              f"project's vizdoom extra): {err}") from err

        self._vzd = vzd
        self.episode_length, self.pillar_steps, self.render_mode = episode_length, pillar_steps, render_mode
        self.observation_space = spaces.Box(0, 255, (*SCREEN, 3), np.uint8)
        self.action_space = spaces.Discrete(len(BUTTONS))
        game = vzd.DoomGame()
        wad = two_colors_wad(pillar_steps)
        game.set_doom_scenario_path(str(wad))
        # The engine's ini (and its _vizdoom/ folder) beside the WAD, not in the working directory.
        game.set_doom_config_path(str(wad.parent / "_vizdoom.ini"))
        game.add_game_args(f"-savedir {wad.parent / 'saves'}")
        game.set_screen_resolution(vzd.ScreenResolution.RES_320X180)
        game.set_screen_format(vzd.ScreenFormat.RGB24)
        # Only the room: no HUD, weapon, crosshair, pickup messages or screen flashes (the weapon's
        # sway and the messages' timing made frames differ between equally seeded episodes).
        game.set_render_hud(False)
        game.set_render_weapon(False)
        game.set_render_crosshair(False)
        game.set_render_messages(False)
        game.set_render_screen_flashes(False)
        game.set_window_visible(False)
        game.set_sound_enabled(False)
        game.set_objects_info_enabled(True)
        game.set_available_buttons([vzd.Button.TURN_LEFT, vzd.Button.TURN_RIGHT, vzd.Button.MOVE_FORWARD])
        game.set_available_game_variables([vzd.GameVariable.HEALTH, vzd.GameVariable.ITEMCOUNT,
                                           vzd.GameVariable.DAMAGE_TAKEN, vzd.GameVariable.POSITION_X,
                                           vzd.GameVariable.POSITION_Y, vzd.GameVariable.ANGLE])
        game.set_episode_timeout(episode_length * FRAME_SKIP + 1)
        game.set_mode(vzd.Mode.PLAYER)
        game.add_game_args("+vid_forcesurface 1")
        try:
            game.init()
        except Exception as err:  # vizdoom's own exception types, none of them an OSError
            raise OSError(f"the ViZDoom engine failed to start ({type(err).__name__}: {err})") from err
        self._game = game
        self.colour: str | None = None
        self._frame = np.zeros((*SCREEN, 3), np.uint8)
        self._variables = np.zeros(6)
        self._steps = self._good = self._bad = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        draw = int(self.np_random.integers(2))
        # A seeded episode's colour is the seed's parity (even red), so that any run of consecutive
        # seeds, an evaluation's seed .. seed + N - 1, holds as many red as green episodes.
        self.colour = COLOURS[seed % 2 if seed is not None else draw]
        self._game.set_doom_map(MAPS[self.colour])
        self._game.set_seed(int(self.np_random.integers(2**31 - 1)))  # the objects' places
        try:
            self._game.new_episode()
        except Exception as err:  # the engine exited or was closed
            raise OSError(f"the ViZDoom engine failed to start an episode ({type(err).__name__}: {err})") from err
        self._steps = self._good = self._bad = 0
        self._read_state()
        return self._frame.copy(), {"good": 0, "bad": 0}

    def step(self, action):
        if self.colour is None:
            raise RuntimeError("call reset() before step()")
        if not self.action_space.contains(action):  # (not int(action): 1.7 would be taken as 1)
            raise ValueError(f"actions are 0..{len(BUTTONS) - 1}, got {action!r}")
        before = self._variables
        self._game.make_action(BUTTONS[int(action)], FRAME_SKIP)
        self._steps += 1
        dead = self._game.is_episode_finished() and self._game.is_player_dead()
        self._read_state()
        after = self._variables
        good = int(after[1] - before[1])
        # The acid takes at most 10 HP a step: every further 25 of damage is a wrong object.
        bad = int(max(after[2] - before[2], 0) // HURT)
        self._good, self._bad = self._good + good, self._bad + bad
        reward = good - bad + (0.0 if dead else LIVING_REWARD)
        truncated = not dead and (self._steps >= self.episode_length or self._game.is_episode_finished())
        return self._frame.copy(), float(reward), bool(dead), bool(truncated), {"good": self._good, "bad": self._bad}

    def _read_state(self) -> None:
        """Frame and variables of the current state.  Once the episode has ended there is no state:
        the frame and the objects stay as they were, the variables are read one by one (the step
        that kills the player may pick a wrong object, which its damage must count)."""
        state = self._game.get_state()
        if state is None:
            self._variables = np.array([self._game.get_game_variable(v)
                                        for v in self._game.get_available_game_variables()], dtype=np.float64)
            return
        from PIL import Image

        image = Image.fromarray(state.screen_buffer).resize(SCREEN[::-1], Image.Resampling.BOX)
        self._frame = np.asarray(image, dtype=np.uint8)
        self._variables = np.asarray(state.game_variables, dtype=np.float64)
        self._objects = [(o.name, o.position_x, o.position_y) for o in state.objects]

    def privileged_state(self) -> dict[str, Any]:
        """The episode's colour, the player's (x, y) and heading (degrees, counter-clockwise from
        east), health, whether the pillar still stands, and the objects (x, y) of the good and the
        bad colour.  For oracles and diagnostics, never a policy's input."""
        if self.colour is None:
            raise RuntimeError("call reset() before privileged_state()")
        health, _, _, x, y, angle = self._variables
        objects = {kind: [(px, py) for name, px, py in self._objects if name.endswith(f"_{kind}")]
                   for kind in ("good", "bad")}
        return {"colour": self.colour, "position": np.array([x, y]), "angle": float(angle), "health": float(health),
                "pillar": any(name.startswith("RatePillar") for name, _, _ in self._objects),
                "good": np.array(objects["good"]).reshape(-1, 2), "bad": np.array(objects["bad"]).reshape(-1, 2)}

    def render(self):
        return self._frame.copy()

    def close(self) -> None:
        self._game.close()


class ObjectOracle:
    """Walks to the nearest object of the pillar's colour whose straight path passes no object of the
    other colour closer than ``clearance`` map units (the nearest good one when every path is
    blocked): turns in place beyond ``turn_deg`` off the heading, walks and turns beyond
    ``steer_deg``, else walks straight.  Reads :meth:`ViZDoomTwoColorsEnv.privileged_state`.
    ``seek="bad"`` swaps the colours: a walker that dies on wrong objects (tests of the rewards)."""

    def __init__(self, turn_deg: float = 30.0, steer_deg: float = 6.0, clearance: float = 40.0, seek: str = "good"):
        if seek not in ("good", "bad"):
            raise ValueError(f"seek must be 'good' or 'bad', got {seek!r}")
        self.turn, self.steer, self.clearance, self.seek = turn_deg, steer_deg, clearance, seek

    def __call__(self, env: ViZDoomTwoColorsEnv) -> int:
        state = env.privileged_state()
        pos, good, bad = state["position"], state["good"], state["bad"]
        if self.seek == "bad":
            good, bad = bad, good
        if len(good) == 0:
            return LEFT
        order = np.argsort(np.linalg.norm(good - pos, axis=1))
        target = good[order[0]]
        for i in order:
            if not _passes_near(pos, good[i], bad, self.clearance):
                target = good[i]
                break
        want = math.degrees(math.atan2(target[1] - pos[1], target[0] - pos[0]))
        diff = (want - state["angle"] + 180.0) % 360.0 - 180.0  # positive: the target is to the left
        if abs(diff) > self.turn:
            return LEFT if diff > 0 else RIGHT
        if abs(diff) > self.steer:
            return FORWARD_LEFT if diff > 0 else FORWARD_RIGHT
        return FORWARD


def _passes_near(start: np.ndarray, end: np.ndarray, points: np.ndarray, distance: float) -> bool:
    """Whether the segment start-end passes within ``distance`` of any of ``points`` (N, 2)."""
    if len(points) == 0:
        return False
    seg = end - start
    t = np.clip(((points - start) @ seg) / max(seg @ seg, 1e-9), 0.0, 1.0)
    return bool((np.linalg.norm(start + t[:, None] * seg - points, axis=1) < distance).any())
