"""Each registry optimizer against its equations, written out in float64, step by step."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from robustbench_opt.optim import build_optimizer, optimizer_step

N_STEPS = 8
THETA0 = torch.tensor([0.8, -1.3, 0.05, 2.0, -0.4, 1.1], dtype=torch.float64)
TIGHT = {"rtol": 1e-12, "atol": 1e-14}

Rule = Callable[[dict, Tensor, Tensor, int], Tensor]  # (state, theta, g, t) -> new theta


def _grads(seed: int = 0, n_steps: int = N_STEPS) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    scales = torch.tensor([1.0, 0.01, 3.0, 0.3, 10.0, 0.1], dtype=torch.float64)
    return torch.randn(n_steps, THETA0.numel(), generator=gen, dtype=torch.float64) * scales


def _run(name: str, lr: float, wd: float, kwargs: dict, grads: Tensor) -> list[Tensor]:
    """Trajectory of the registry optimizer fed the fixed gradients `grads`."""
    p = nn.Parameter(THETA0.clone())
    built = build_optimizer([p], name, lr, wd, kwargs)
    out = []
    for g in grads:
        p.grad = g.clone()
        built.optimizer.step()
        out.append(p.detach().clone())
    return out


def _reference(rule: Rule, grads: Tensor) -> list[Tensor]:
    theta, state, out = THETA0.clone(), {}, []
    for t, g in enumerate(grads, start=1):
        theta = rule(state, theta, g.clone(), t)
        out.append(theta.clone())
    return out


def _assert_trajectories(actual: list[Tensor], expected: list[Tensor], **tol: float) -> None:
    for t, (a, e) in enumerate(zip(actual, expected, strict=True), start=1):
        torch.testing.assert_close(a, e, msg=lambda m, t=t: f"step {t}: {m}", **(tol or TIGHT))


def _moments(state: dict, g: Tensor, b1: float, b2: float) -> tuple[Tensor, Tensor]:
    """Adam's m and v (eq. 6-7)."""
    state["m"] = b1 * state.get("m", torch.zeros_like(g)) + (1 - b1) * g
    state["v"] = b2 * state.get("v", torch.zeros_like(g)) + (1 - b2) * g * g
    return state["m"], state["v"]


def _rho(t: int, b2: float) -> tuple[float, float]:
    """RAdam's rho_t and rectifier r_t (eq. 11-13); r_t is nan where rho_t <= 4."""
    rho_inf = 2 / (1 - b2) - 1
    rho_t = rho_inf - 2 * t * b2**t / (1 - b2**t)
    if rho_t <= 4:
        return rho_t, math.nan
    r = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
    return rho_t, r


# --- SGD family (framework momentum convention, see robustbench_opt.optim) -----------------


def _sgd(lr: float, wd: float) -> Rule:
    return lambda state, theta, g, t: theta - lr * (g + wd * theta)


def _momentum(lr: float, wd: float, mu: float, nesterov: bool) -> Rule:
    def rule(state: dict, theta: Tensor, g: Tensor, t: int) -> Tensor:
        g = g + wd * theta  # L2 (eq. 18)
        state["d"] = mu * state.get("d", torch.zeros_like(g)) + g
        return theta - lr * (g + mu * state["d"] if nesterov else state["d"])

    return rule


@pytest.mark.parametrize(
    ("name", "kwargs", "rule"),
    [
        ("sgd", {}, _sgd(0.1, 0.01)),
        ("momentum", {}, _momentum(0.1, 0.01, 0.9, nesterov=False)),
        ("momentum", {"momentum": 0.5}, _momentum(0.1, 0.01, 0.5, nesterov=False)),
        ("nag", {}, _momentum(0.1, 0.01, 0.9, nesterov=True)),
    ],
)
def test_sgd_family_matches_its_equations(name: str, kwargs: dict, rule: Rule) -> None:
    grads = _grads()
    _assert_trajectories(_run(name, 0.1, 0.01, kwargs, grads), _reference(rule, grads))


def test_paper_momentum_form_equals_ours_with_lr_scaled_by_one_minus_mu() -> None:
    """Docstring claim: eq. 3-4 (d <- mu d + (1 - mu) lr g) at lr equals ours at (1 - mu) lr."""
    mu, lr_paper, grads = 0.9, 0.5, _grads()

    def paper(state: dict, theta: Tensor, g: Tensor, t: int) -> Tensor:
        state["d"] = mu * state.get("d", torch.zeros_like(g)) + (1 - mu) * lr_paper * g
        return theta - state["d"]

    ours = _run("momentum", (1 - mu) * lr_paper, 0.0, {"momentum": mu}, grads)
    _assert_trajectories(ours, _reference(paper, grads))


# --- Adam family ---------------------------------------------------------------------------


def _adam(lr: float, wd: float, b1: float, b2: float, eps: float, decoupled: bool) -> Rule:
    """Adam eq. 6-10 (eps outside the root, as torch); L2 (eq. 18) or decoupled (AdamW)."""

    def rule(state: dict, theta: Tensor, g: Tensor, t: int) -> Tensor:
        if decoupled:
            theta = theta * (1 - lr * wd)
        else:
            g = g + wd * theta
        m, v = _moments(state, g, b1, b2)
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        return theta - lr * m_hat / (v_hat.sqrt() + eps)

    return rule


def _radam(lr: float, wd: float, b1: float, b2: float, eps: float, threshold: float) -> Rule:
    """RAdam eq. 11-15 with decoupled decay, eps outside the root (torch's placement)."""

    def rule(state: dict, theta: Tensor, g: Tensor, t: int) -> Tensor:
        theta = theta * (1 - lr * wd)
        m, v = _moments(state, g, b1, b2)
        m_hat, bc2 = m / (1 - b1**t), 1 - b2**t
        rho_t, r = _rho(t, b2)
        if rho_t > threshold:
            return theta - lr * r * m_hat / ((v / bc2).sqrt() + eps / math.sqrt(bc2))
        return theta - lr * m_hat

    return rule


def _belief(state: dict, g: Tensor, b1: float, b2: float, eps: float) -> tuple[Tensor, Tensor]:
    """AdaBelief eq. 16: m as Adam, s <- b2 s + (1 - b2)(g - m)^2 + eps."""
    state["m"] = b1 * state.get("m", torch.zeros_like(g)) + (1 - b1) * g
    residual = g - state["m"]
    state["s"] = b2 * state.get("s", torch.zeros_like(g)) + (1 - b2) * residual**2 + eps
    return state["m"], state["s"]


def _adabelief(lr: float, wd: float, b1: float, b2: float, eps: float) -> Rule:
    def rule(state: dict, theta: Tensor, g: Tensor, t: int) -> Tensor:
        theta = theta * (1 - lr * wd)
        m, s = _belief(state, g, b1, b2, eps)
        m_hat, s_hat = m / (1 - b1**t), s / (1 - b2**t)
        return theta - lr * m_hat / (s_hat.sqrt() + eps)

    return rule


def _adabound(
    lr: float, wd: float, b1: float, b2: float, eps: float, final_lr: float, gamma: float
):
    """AdaBound as upstream (Luolc/AdaBound): clipped per-element step size times m."""
    clipped = {"low": 0, "high": 0}

    def rule(state: dict, theta: Tensor, g: Tensor, t: int) -> Tensor:
        g = g + wd * theta
        m, v = _moments(state, g, b1, b2)
        step = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
        low, high = final_lr * (1 - 1 / (gamma * t + 1)), final_lr * (1 + 1 / (gamma * t))
        raw = step / ((v + 1e-15).sqrt() + eps)
        clipped["low"] += int((raw < low).sum())
        clipped["high"] += int((raw > high).sum())
        return theta - raw.clamp(low, high) * m

    return rule, clipped


EPS = 1e-3  # large enough that the eps placement shows at the test's tolerance


@pytest.mark.parametrize(
    ("name", "b2", "rule"),
    [
        ("adam", 0.999, _adam(0.01, 0.1, 0.9, 0.999, EPS, decoupled=False)),
        ("adamw", 0.999, _adam(0.01, 0.1, 0.9, 0.999, EPS, decoupled=True)),
        ("radam", 0.9, _radam(0.01, 0.1, 0.9, 0.9, EPS, threshold=5)),
        ("adabelief", 0.999, _adabelief(0.01, 0.1, 0.9, 0.999, EPS)),
    ],
)
def test_adam_family_matches_its_equations(name: str, b2: float, rule: Rule) -> None:
    grads = _grads()
    kwargs = {"betas": (0.9, b2), "eps": EPS}
    _assert_trajectories(_run(name, 0.01, 0.1, kwargs, grads), _reference(rule, grads))


def test_radam_switches_to_the_rectified_step_after_rho_t_exceeds_5() -> None:
    rectified = [_rho(t, 0.9)[0] > 5 for t in range(1, N_STEPS + 1)]
    assert rectified == [False] * 5 + [True] * 3  # so the test above drives both branches


def test_adabound_matches_upstream_and_its_bounds_clip() -> None:
    grads = _grads()
    rule, clipped = _adabound(0.05, 0.01, 0.9, 0.999, EPS, final_lr=0.1, gamma=0.5)
    kwargs = {"eps": EPS, "final_lr": 0.1, "gamma": 0.5}
    _assert_trajectories(_run("adabound", 0.05, 0.01, kwargs, grads), _reference(rule, grads))
    assert clipped["low"] > 0 and clipped["high"] > 0  # both bounds were exercised


# --- the proposed optimizer (eq. 19-20) ----------------------------------------------------


def _proposed(lr: float, wd: float, b1: float, b2: float, eps: float, branches: list) -> Rule:
    """Eq. 19-20 with the library's documented eps placement (eps outside the root)."""

    def rule(state: dict, theta: Tensor, g: Tensor, t: int) -> Tensor:
        m, s = _belief(state, g, b1, b2, eps)
        m_hat, bc2 = m / (1 - b1**t), 1 - b2**t
        rho_t, r = _rho(t, b2)
        branches.append(19 if rho_t > 4 else 20)
        if rho_t > 4:  # eq. 19
            update = r * m_hat / ((s / bc2).sqrt() + eps / math.sqrt(bc2))
        else:  # eq. 20
            update = m_hat
        return theta - lr * (update + wd * theta)

    return rule


def _proposed_as_printed(lr: float, wd: float, b1: float, b2: float, eps: float) -> Rule:
    """Eq. 19-20 exactly as the paper prints them: r_t m_hat / sqrt(v_hat + eps)."""

    def rule(state: dict, theta: Tensor, g: Tensor, t: int) -> Tensor:
        m, s = _belief(state, g, b1, b2, eps)
        m_hat, s_hat = m / (1 - b1**t), s / (1 - b2**t)
        rho_t, r = _rho(t, b2)
        update = r * m_hat / (s_hat + eps).sqrt() if rho_t > 4 else m_hat
        return theta - lr * (update + wd * theta)

    return rule


def test_proposed_runs_eq_20_then_eq_19_as_documented() -> None:
    grads, branches = _grads(), []
    rule = _proposed(0.01, 0.1, 0.9, 0.9, EPS, branches)
    kwargs = {"betas": (0.9, 0.9), "eps": EPS}
    actual = _run("adamw_radam_adabelief", 0.01, 0.1, kwargs, grads)
    _assert_trajectories(actual, _reference(rule, grads))
    assert branches == [20] * 4 + [19] * 4  # rho_t = 1, 1.95, 2.86, 3.74, then 4.58, ...


def test_proposed_equals_the_printed_equations_at_its_default_eps() -> None:
    grads = _grads()
    actual = _run("proposed", 0.01, 0.1, {"betas": (0.9, 0.9)}, grads)
    expected = _reference(_proposed_as_printed(0.01, 0.1, 0.9, 0.9, 1e-16), grads)
    _assert_trajectories(actual, expected, rtol=1e-11, atol=1e-14)


def test_proposed_differs_from_plain_adabelief_in_the_unrectified_steps() -> None:
    grads = _grads()
    kwargs = {"betas": (0.9, 0.9)}
    proposed, belief = (
        _run("proposed", 0.01, 0.1, kwargs, grads),
        _run("adabelief", 0.01, 0.1, kwargs, grads),
    )
    assert not torch.allclose(proposed[0], belief[0], rtol=1e-3, atol=0)


# --- SAM family ----------------------------------------------------------------------------

C = torch.tensor([1.0, 2.0, 0.5, 1.5, 0.3, 1.0], dtype=torch.float64)
B = torch.tensor([0.3, -0.2, 0.5, -1.0, 0.1, 0.4], dtype=torch.float64)


class Quartic(nn.Module):
    """f(w) = sum(c w^4) / 4 + b . w, so grad f(w) = c w^3 + b in closed form."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(THETA0.clone())

    def forward(self) -> Tensor:
        return 0.25 * (C * self.w**4).sum() + (B * self.w).sum()


def _grad_f(w: Tensor) -> Tensor:
    return C * w**3 + B


def _sam_reference(rho: float, adaptive: bool, base: Rule, n_steps: int) -> list[Tensor]:
    w, state, out = THETA0.clone(), {}, []
    for t in range(1, n_steps + 1):
        g = _grad_f(w)
        if adaptive:  # ASAM: e = rho w^2 g / || |w| g ||
            e = rho * w**2 * g / (w.abs() * g).norm()
        else:  # SAM: e = rho g / ||g||
            e = rho * g / g.norm()
        w = base(state, w, _grad_f(w + e), t)  # gradient at w + e, step from w
        out.append(w.clone())
    return out


@pytest.mark.parametrize("name", ["sam", "asam"])
@pytest.mark.parametrize(
    ("base", "base_kwargs", "rule"),
    [
        ("momentum", {}, _momentum(0.05, 0.01, 0.9, nesterov=False)),
        ("adamw", {"eps": EPS}, _adam(0.05, 0.01, 0.9, 0.999, EPS, decoupled=True)),
    ],
)
def test_sam_step_equals_its_two_pass_definition(
    name: str, base: str, base_kwargs: dict, rule: Rule
) -> None:
    rho = 0.3
    model = Quartic()
    kwargs = {"base": base, "rho": rho, **base_kwargs}
    built = build_optimizer(model.parameters(), name, 0.05, 0.01, kwargs)
    actual = []
    for _ in range(3):
        optimizer_step(model, built, model)
        actual.append(model.w.detach().clone())
    expected = _sam_reference(rho, name == "asam", rule, 3)
    # pytorch-optimizer computes ||g|| in float32: e carries a ~1e-7 relative error.
    _assert_trajectories(actual, expected, rtol=1e-6, atol=1e-9)
    unperturbed = _sam_reference(0.0, name == "asam", rule, 3)[-1]
    assert (actual[-1] - unperturbed).abs().max() > 5e-5  # 50x above the tolerance
