"""A reward function that fails, for tests of how a crashed run ends (`--reward_funcs tests.scripts.failing_reward.fail`)."""


def fail(completions, **kwargs):
    raise RuntimeError("this reward fails on purpose")
