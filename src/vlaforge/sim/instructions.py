"""Natural-language instructions for the simulated tasks: three paraphrases per task.

A VLA is conditioned on language, so every episode gets an instruction. Paraphrases (rather than one fixed
string per task) keep a policy from keying on exact wording; the harness picks one per episode from the
episode seed (`vlaforge.sim.env.choose_instruction`), so a run is still reproducible. The wording follows
the task descriptions of the Meta-World paper (Yu et al., 2019), phrased as commands to the robot.
LIBERO tasks bring their own language and are not listed here.
"""

from __future__ import annotations

import difflib

METAWORLD_INSTRUCTIONS: dict[str, list[str]] = {
    "assembly-v3": [
        "put the ring on the peg",
        "pick up the nut and place it onto the peg",
        "assemble the ring onto the post",
    ],
    "basketball-v3": [
        "dunk the ball into the basket",
        "put the basketball in the hoop",
        "pick up the ball and drop it in the basket",
    ],
    "bin-picking-v3": [
        "move the puck from one bin to the other",
        "pick the puck out of the bin and place it in the other bin",
        "transfer the puck to the other bin",
    ],
    "box-close-v3": ["put the lid on the box", "close the box with its lid", "pick up the lid and cover the box"],
    "button-press-topdown-v3": [
        "press the button from the top",
        "push the button down from above",
        "press down on the button",
    ],
    "button-press-topdown-wall-v3": [
        "press the button from the top past the wall",
        "push the button down from above, avoiding the wall",
        "reach over the wall and press the button down",
    ],
    "button-press-v3": ["press the button", "push the button in from the front", "press the button on the box"],
    "button-press-wall-v3": [
        "press the button behind the wall",
        "push the button in, reaching around the wall",
        "go around the wall and press the button",
    ],
    "coffee-button-v3": [
        "press the button on the coffee machine",
        "push the coffee machine's button",
        "start the coffee machine",
    ],
    "coffee-pull-v3": [
        "pull the mug away from the coffee machine",
        "slide the coffee mug out of the machine",
        "take the mug out from under the coffee machine",
    ],
    "coffee-push-v3": [
        "push the mug under the coffee machine",
        "slide the mug into the coffee machine",
        "put the mug under the coffee spout",
    ],
    "dial-turn-v3": ["turn the dial", "rotate the dial a quarter turn", "twist the knob"],
    "disassemble-v3": ["take the ring off the peg", "pick the nut up off the peg", "remove the ring from the post"],
    "door-close-v3": ["close the door", "push the door shut", "swing the door closed"],
    "door-lock-v3": ["lock the door", "turn the door lock down", "rotate the lock to lock the door"],
    "door-open-v3": ["open the door", "pull the door open by its handle", "swing the door open"],
    "door-unlock-v3": ["unlock the door", "turn the door lock up", "rotate the lock to unlock the door"],
    "hand-insert-v3": [
        "put the puck in the hole",
        "insert the puck into the hole in the table",
        "slide the puck into the hole",
    ],
    "drawer-close-v3": ["close the drawer", "push the drawer shut", "slide the drawer closed"],
    "drawer-open-v3": ["open the drawer", "pull the drawer open", "slide the drawer out by its handle"],
    "faucet-open-v3": ["turn the faucet on", "rotate the faucet handle to open it", "open the faucet"],
    "faucet-close-v3": ["turn the faucet off", "rotate the faucet handle to close it", "close the faucet"],
    "hammer-v3": [
        "hammer the nail into the wall",
        "pick up the hammer and drive in the nail",
        "use the hammer to hit the nail",
    ],
    "handle-press-side-v3": [
        "press the handle down from the side",
        "push the side handle down",
        "press down on the handle from the side",
    ],
    "handle-press-v3": ["press the handle down", "push the handle down", "press down on the handle"],
    "handle-pull-side-v3": [
        "pull the handle up from the side",
        "lift the side handle",
        "pull up on the handle from the side",
    ],
    "handle-pull-v3": ["pull the handle up", "lift the handle", "pull up on the handle"],
    "lever-pull-v3": ["pull the lever up", "raise the lever", "lift the lever all the way up"],
    "pick-place-wall-v3": [
        "pick up the puck and place it behind the wall",
        "move the puck over the wall to the goal",
        "lift the puck past the wall and put it down at the target",
    ],
    "pick-out-of-hole-v3": [
        "pick the puck out of the hole",
        "lift the puck up out of the hole",
        "take the puck out of the hole",
    ],
    "pick-place-v3": [
        "pick up the puck and place it at the goal",
        "move the puck to the target position",
        "grasp the puck and put it at the target",
    ],
    "plate-slide-v3": [
        "slide the plate into the cabinet",
        "push the plate into the goal",
        "slide the plate forward into the cabinet",
    ],
    "plate-slide-side-v3": [
        "slide the plate into the cabinet from the side",
        "push the plate sideways into the goal",
        "slide the plate sideways into the cabinet",
    ],
    "plate-slide-back-v3": [
        "slide the plate out of the cabinet",
        "pull the plate back out of the goal",
        "get the plate out of the cabinet",
    ],
    "plate-slide-back-side-v3": [
        "slide the plate out of the cabinet sideways",
        "pull the plate out of the cabinet to the side",
        "get the plate out of the cabinet from the side",
    ],
    "peg-insert-side-v3": [
        "insert the peg into the hole from the side",
        "pick up the peg and push it into the side hole",
        "put the peg in the hole",
    ],
    "peg-unplug-side-v3": [
        "unplug the peg from the side",
        "pull the peg out of the hole sideways",
        "remove the peg from the box",
    ],
    "soccer-v3": ["kick the ball into the goal", "push the soccer ball into the net", "score a goal with the ball"],
    "stick-push-v3": [
        "use the stick to push the bottle",
        "grasp the stick and push the thermos to the goal",
        "push the bottle with the stick",
    ],
    "stick-pull-v3": [
        "use the stick to pull the bottle",
        "grasp the stick and pull the thermos to the goal",
        "pull the bottle with the stick",
    ],
    "push-v3": ["push the puck to the goal", "slide the puck to the target", "push the puck to the target position"],
    "push-wall-v3": [
        "push the puck past the wall to the goal",
        "slide the puck around the wall to the target",
        "push the puck to the goal behind the wall",
    ],
    "push-back-v3": [
        "push the puck backward to the goal",
        "slide the puck back toward the target",
        "pull the puck back to the goal",
    ],
    "reach-v3": ["reach the goal position", "move the gripper to the target", "reach for the goal"],
    "reach-wall-v3": [
        "reach the goal behind the wall",
        "move the gripper over the wall to the target",
        "reach for the goal past the wall",
    ],
    "shelf-place-v3": [
        "put the block on the shelf",
        "pick up the block and place it on the shelf",
        "place the cube onto the shelf",
    ],
    "sweep-into-v3": [
        "sweep the puck into the hole",
        "push the puck into the hole",
        "slide the puck into the hole in the table",
    ],
    "sweep-v3": [
        "sweep the puck off the table",
        "push the puck off the edge of the table",
        "slide the puck off the table",
    ],
    "window-open-v3": ["open the window", "slide the window open", "push the window open sideways"],
    "window-close-v3": ["close the window", "slide the window shut", "push the window closed sideways"],
}

PUSHT_INSTRUCTIONS: dict[str, list[str]] = {
    "pusht": [
        "push the T-shaped block onto the target",
        "slide the T into the outlined goal",
        "align the T block with the target",
    ],
}


def paraphrases(task: str, table: dict[str, list[str]] | None = None) -> list[str]:
    """The instruction paraphrases of `task`.

    Args:
        task: a task name such as "drawer-close-v3" or "pusht".
        table: which table to look in (default: Meta-World's and PushT's together).

    Raises:
        ValueError: for an unknown task, with the closest valid names.
    """
    table = table if table is not None else {**METAWORLD_INSTRUCTIONS, **PUSHT_INSTRUCTIONS}
    if task not in table:
        close = difflib.get_close_matches(task, table, 3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"no instructions for task '{task}'.{hint}")
    return table[task]
