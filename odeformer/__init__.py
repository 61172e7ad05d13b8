"""Symbolic ODE regression: noisy, irregular trajectories in, closed-form dx/dt = f(x, t) out."""

__all__ = ["ODERegressor"]


def __getattr__(name):  # lazy, so the training path does not import the inference stack
    if name == "ODERegressor":
        from odeformer.regressor import ODERegressor

        return ODERegressor
    raise AttributeError(name)
