"""The checks that look at the model before training: `python -m runner.check checks=[loss_at_init,gradients_flow]`.

loss_at_init and output_bias: the loss of the untrained model against what chance predicts;
gradients_flow: every trainable parameter learns; train_eval_mode: dropout/BatchNorm switch with the mode, eval repeats.
"""

from __future__ import annotations

import torch
from torch import nn

from runner import models
from runner.checks import data, loss_probe, structure
from runner.checks.setup import Result, Setup, class_counts, fresh
from runner.training.optim import build_optimizer


def loss_at_init(setup: Setup, init_output_bias: str = "none", seed: int = 0) -> float:
    """The configured loss of a fresh model (eval mode) on the checks' batch (another model seed and
    batch with seed=1, 2, ...)."""
    model = fresh(setup, seed_offset=seed, init_output_bias=init_output_bias).eval()
    x, y = setup.batch(seed=seed)
    with torch.no_grad():
        return float(setup.mean_loss(model(x), y))


def loss_of_constant_logits(setup: Setup, logits: torch.Tensor) -> float:
    """The configured loss on the checks' batch of a model that outputs `logits` for every sample."""
    _, y = setup.batch()
    with torch.no_grad():
        return float(setup.mean_loss(logits.expand(len(y), -1).to(y.device), y))


def expected_at_init(setup: Setup, bias: str) -> tuple[str, float]:
    """What the loss at init should be: the configured loss of uniform predictions (or of the class
    prior with the prior bias), with cross-entropy's ln(C) beside it for a user's own loss, an anchor
    that does not share that loss's sign."""
    plain = setup.cfg.loss.get("_target_", "").endswith("losses.cross_entropy")
    if bias == "prior":
        prior = class_counts(setup).float() / class_counts(setup).sum()
        value = loss_of_constant_logits(setup, prior.clamp_min(1e-12).log())
        expected = "entropy of the class prior" if plain else "the configured loss of predicting the class prior"
    else:
        value = loss_of_constant_logits(setup, torch.zeros(setup.num_classes))
        expected = f"-ln(1/{setup.num_classes})" if plain else "the configured loss of uniform predictions"
    expected = f"{expected} = {value:.3f}"
    if not plain:
        expected += (f" (cross-entropy of uniform predictions: ln({setup.num_classes}) = "
                     f"{loss_probe.cross_entropy_of_uniform(setup.num_classes):.3f})")
    return expected, value


def probed_loss_finding(setup: Setup) -> tuple[str, str] | None:
    """(verdict, fix) when the configured loss itself, probed apart from the model, rewards wrong
    answers or gives samples the model gets wrong no gradient."""
    if setup.num_classes < 2:  # no other class to rank the target against
        return None
    probed = loss_probe.probe(setup.loss, setup.num_classes, setup.device)
    wrong_sign = loss_probe.rewards_wrong_answers(probed)
    return ("FAIL", wrong_sign) if wrong_sign else loss_probe.ignored_below_chance(probed)


def check_loss_at_init(setup: Setup) -> Result:
    """The initial loss against that of uniform predictions (-ln(1/C) for cross-entropy), or of the
    class prior when the output bias starts at the prior; with the configured loss. The loss itself
    is probed first (loss_probe.py): a loss that rewards wrong answers, or gives wrong samples no
    gradient, makes that comparison meaningless."""
    bias = setup.cfg.model.get("init_output_bias", "none")
    measured = loss_at_init(setup, bias)
    expected, expected_value = expected_at_init(setup, bias)
    figure = f"{measured:.3f}"
    details = {"measured": measured, "expected": expected_value}
    loss_finding = probed_loss_finding(setup)
    if loss_finding:
        return Result("loss_at_init", figure, expected, loss_finding[0], loss_finding[1], details)
    gap = abs(measured - expected_value) / max(abs(expected_value), 1e-6)
    fix = ("the logits at init are too large or biased: scale down the last layer's initial weights, "
           "check that the loss gets logits (not probabilities) and that labels match the outputs")
    if gap <= 0.25:
        return Result("loss_at_init", figure, expected, "PASS", details=details)
    return Result("loss_at_init", figure, expected, "WARN" if gap <= 1.0 else "FAIL", fix, details)


def check_output_bias(setup: Setup) -> Result:
    """model.init_output_bias=prior: how much it lowers the loss at init. Measured with three model seeds,
    each on its own batch: a verdict needs all three to agree, so initialisation and batch noise alone
    (a few thousandths) give none."""
    pairs = [(loss_at_init(setup, "none", seed), loss_at_init(setup, "prior", seed)) for seed in range(3)]
    gains = [uniform - prior for uniform, prior in pairs]
    uniform, prior = (sum(values) / len(pairs) for values in zip(*pairs, strict=True))
    counts = class_counts(setup)
    imbalance = float(counts[counts > 0].max() / counts[counts > 0].min())
    figure = (f"loss at init {uniform:.3f} -> {prior:.3f} with the prior bias (classes {imbalance:.1f}x imbalanced; "
              f"{min(gains):+.3f}..{max(gains):+.3f} over 3 seeds)")
    details = {"uniform_bias": uniform, "prior_bias": prior, "imbalance": imbalance, "gains": gains}
    if max(gains) < -0.01:
        return Result("output_bias", figure, "no higher than without", "WARN",
                      "the prior bias raised the loss with every seed: the output layer's bias may not be the "
                      "logits' offset (a layer after it?)", details)
    wrapped = data.wrapped_labels(counts)
    if wrapped:  # a prior of those counts would build the wrap into the model
        return Result("output_bias", figure, "no higher than without", "WARN",
                      f"the class counts show {wrapped}: fix the labels (see the splits check) before any prior "
                      "bias", details)
    fix = "set model.init_output_bias=prior" if min(gains) > 0.05 and setup.cfg.model.get("init_output_bias") != "prior" else ""
    return Result("output_bias", figure, "no higher than without", "WARN" if fix else "PASS", fix, details)


def parameter_problems(setup: Setup, model: nn.Module) -> tuple[dict[str, str], int]:
    """{name: what is wrong} for the trainable parameters that get no usable gradient or do not change
    after one update of the configured optimizer, and how many trainable tensors there are."""
    x, y = setup.batch()
    setup.mean_loss(model(x), y).backward()
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    problems = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:
            problems[name] = "no gradient (unused)"
        elif not torch.isfinite(p.grad).all():
            problems[name] = "non-finite gradient"
        elif not p.grad.any():
            problems[name] = "zero gradient"
    optimizer = build_optimizer(setup.cfg.optimizer, model)
    optimizer.step()
    for name, p in model.named_parameters():
        if name in before and name not in problems and torch.equal(before[name], p.detach()):
            problems[name] = "unchanged after a step"
    if "zero gradient" in problems.values():  # a branch behind a norm scale initialised to 0 (zero-init residual,
        optimizer.zero_grad()                # timm's ResNets) gets its first gradient once that scale has moved
        setup.mean_loss(model(x), y).backward()
        grads = {name: p.grad for name, p in model.named_parameters()}
        problems = {name: why for name, why in problems.items()
                    if why != "zero gradient" or grads[name] is None or not grads[name].any()}
    return problems, len(before)


def frozen_at_random_values(setup: Setup, model: nn.Module) -> list[str]:
    """The frozen tensors whose values change with the initialisation seed: left at their random
    initial values, not loaded or set on purpose (an edge filter, pretrained weights are the same
    whatever the seed)."""
    frozen = {name: p for name, p in model.named_parameters() if not p.requires_grad}
    if not frozen:
        return []
    other = dict(fresh(setup, seed_offset=1).named_parameters())
    return [name for name, p in frozen.items()
            if name in other and other[name].shape == p.shape and not torch.equal(other[name].to(p.device), p)]


def loss_gives_no_gradient(setup: Setup) -> str | None:
    """Why no parameter learns when the loss itself gives no sample a gradient (a clipped loss)."""
    x, y = setup.batch()
    with torch.no_grad():
        logits = fresh(setup).train()(x)
    return loss_probe.no_gradient_on_batch(setup.loss, logits, y)


def listed(names: list[str], most: int = 4) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def check_gradients_flow(setup: Setup) -> Result:
    """Every trainable parameter gets a finite, non-zero gradient and changes after one update; the
    frozen ones are counted and named: frozen at random initial values is a FAIL unless model.freeze
    declares it, and a declared frozen backbone must have been trained (pretrained)."""
    model = fresh(setup).train()
    random_frozen = frozen_at_random_values(setup, model)
    problems, trainable = parameter_problems(setup, model)
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    figure = f"{trainable - len(problems)} of {trainable} trainable parameter tensors learn"
    if frozen:
        figure += f"; {len(frozen)} frozen ({', '.join(frozen[:4])}{', ...' if len(frozen) > 4 else ''})"
    if random_frozen:
        figure += f", {len(random_frozen)} of them at their random initial values"
    details = {"problems": problems, "frozen": frozen, "frozen_at_initial_values": random_frozen}
    if problems:
        stopped_by_the_loss = loss_gives_no_gradient(setup)
        if stopped_by_the_loss:
            return Result("gradients_flow", figure, "all trainable parameters", "FAIL", stopped_by_the_loss, details)
        listed_problems = "; ".join(f"{k}: {v}" for k, v in list(problems.items())[:5])
        return Result("gradients_flow", figure, "all trainable parameters", "FAIL",
                      f"dead or unused parameters ({listed_problems}): remove them, or fix the forward pass that "
                      "skips them", details)
    model_cfg = setup.cfg.model
    declared = model_cfg.get("freeze", "none") != "none"
    if declared and frozen and not (model_cfg.get("pretrained") or model_cfg.get("weights_path")):
        return Result("gradients_flow", figure, "a frozen part was trained before", "FAIL",
                      f"model.freeze={model_cfg.freeze} freezes a randomly initialised backbone: it stays random for "
                      "ever and only the head learns. Fix: model.pretrained=true (or model.weights_path=FILE), "
                      "or model.freeze=none", details)
    if random_frozen and not declared:
        learning = [name for name, p in model.named_parameters() if p.requires_grad]
        return Result("gradients_flow", figure, "no tensor frozen at its random initial values", "FAIL",
                      f"{len(random_frozen)} tensors frozen at their initial values ({listed(random_frozen)}): they "
                      f"stay random for ever, the model can only train {listed(learning) or 'nothing'}. Fix: drop "
                      "requires_grad_(False) for them, or load trained weights into them before freezing (a fixed "
                      "random projection by design: a buffer, self.register_buffer)", details)
    return Result("gradients_flow", figure, "all trainable parameters", "PASS", details=details)


def micro_batch_finding(setup: Setup, norms: list[str]) -> tuple[str, str, str, str]:
    """(verdict, figure, expected, fix) of the micro-batch the BatchNorm layers normalize over."""
    trainer, settings = setup.cfg.trainer, setup.cfg.checks
    micro, batch = trainer.micro_batch_size, trainer.batch_size
    last = len(setup.splits["train"]) % batch % micro  # the epoch's last, partial micro-batch
    named = f"{len(norms)} BatchNorm layers ({', '.join(norms[:3])}{', ...' if len(norms) > 3 else ''})"
    fix = (f"a larger trainer.micro_batch_size (at least {settings.min_batchnorm_samples}), or GroupNorm/LayerNorm "
           "instead of BatchNorm (they do not depend on the batch)")
    expected = f"micro-batches of at least {settings.min_batchnorm_samples} samples"
    if micro == 1 or last == 1:
        where = "a micro-batch of 1 sample" if micro == 1 else (
            f"the epoch's last micro-batch of 1 sample ({len(setup.splits['train'])} samples)")
        return ("FAIL", f"{named} on {where}", expected,
                f"BatchNorm cannot normalize one sample: training crashes there. Fix: {fix}")
    if micro < settings.min_batchnorm_samples:
        return ("WARN", f"{named} on micro-batches of {micro} samples", expected,
                f"statistics of so few samples are noisy and differ from the running averages used in eval. Fix: {fix}")
    if batch > micro:
        return ("WARN", f"{named} see micro-batches of {micro}, not the learning batch of {batch}",
                expected + ", or no accumulation", f"with accumulation BatchNorm's statistics are the micro-batch's. Fix: {fix}")
    return "PASS", f"{named} on micro-batches of {micro} samples", expected, ""


def check_normalization(setup: Setup) -> Result:
    """BatchNorm normalizes by the statistics of what one forward pass sees: the micro-batch. One sample
    (also an epoch's last micro-batch) crashes training; a few give noisy statistics; with accumulation
    they are the micro-batch's, not the learning batch's. And what comes right before it: a bias it
    removes, a dropout that shifts its statistics between train and eval (structure.py)."""
    model = fresh(setup)
    norms = models.batch_norm_layers(model)
    if not norms:
        return Result("normalization", "no BatchNorm", "BatchNorm on enough samples", "PASS")
    verdict, figure, expected, fix = micro_batch_finding(setup, norms)
    order = structure.batchnorm_order(model, setup.batch(size=8)[0])
    trainer = setup.cfg.trainer
    details = {"layers": norms, "micro_batch_size": trainer.micro_batch_size, "order": order,
               "last_micro_batch": len(setup.splits["train"]) % trainer.batch_size % trainer.micro_batch_size}
    expected += "; no bias or dropout right before it"
    if order:
        figure += f"; {len(order)} in an order BatchNorm undoes or disturbs"
        fix = "; ".join([*order, *([fix] if fix else [])])
        verdict = "WARN" if verdict == "PASS" else verdict
    return Result("normalization", figure, expected, verdict, fix, details)


def check_train_eval_mode(setup: Setup) -> Result:
    """Dropout/BatchNorm change outputs between train and eval mode; eval passes repeat exactly."""
    model = fresh(setup)
    x, _ = setup.batch(size=16)
    stochastic = any(isinstance(m, (nn.Dropout, nn.modules.batchnorm._BatchNorm)) for m in model.modules())
    with torch.no_grad():
        model.eval()
        first, second = model(x), model(x)
        model.train()
        trained = model(x)
    repeatable = torch.equal(first, second)
    differs = not torch.allclose(first, trained)
    figure = (f"eval passes {'identical' if repeatable else 'DIFFER'}; train vs eval "
              f"{'differ' if differs else 'identical'}" + ("" if stochastic else " (no dropout or BatchNorm)"))
    expected = "eval passes identical" + ("; train and eval differ" if stochastic else "")
    if not repeatable:
        return Result("train_eval_mode", figure, expected, "FAIL", "something random runs in eval mode: use "
                      "nn.Dropout (not F.dropout(training=True)) and respect self.training")
    if stochastic and not differs:
        norms = models.batch_norm_layers(model)
        if norms:
            return Result("train_eval_mode", figure, expected, "WARN",
                          f"BatchNorm ({', '.join(norms[:3])}) normalizes with its running statistics in training "
                          "mode too: something calls .eval() on it inside forward, or it was built with "
                          "track_running_stats=False/momentum=0 misused. Fix: let model.train() switch every layer")
        return Result("train_eval_mode", figure, expected, "WARN", "dropout has no effect in training mode: "
                      "p=0, or F.dropout(training=False) in forward. Fix: nn.Dropout(p), switched by model.train()")
    return Result("train_eval_mode", figure, expected, "PASS")
