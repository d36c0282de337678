"""Chosen instead of random starts for tgda: which base images (and labels) the leader starts
from. Measured against the random draw by ``tgda_draws.py --start`` (BENCHMARKS.md, "Several
starts for tgda"); none beat it, so none is in the toolkit.

- ``influence-top``: the ``n_p`` (image, wrong label) pairs whose first-order influence on the
  attacker objective is largest (Koh & Liang 2017): adding (z, y') with weight ε changes the
  clean-train CE 𝓛 of the exact head by ``−ε ∇𝓛ᵀ H⁻¹ ∇_w CE(z, y')``, which for a softmax
  head is ``s_{y'} − pᵀs`` with ``s = V z̃``, ``V = −H⁻¹∇𝓛`` as a (k, d+1) matrix. One label
  per image (its best), the top ``n_p`` images. The same for every seed.
- ``influence-pool``: ``n_p`` drawn (by the seed) from the top ``3 n_p`` of that ranking.
- ``stratified``: ``n_p / k`` base images per class (the remainder to classes drawn by the
  seed), each with its most confusable wrong label (tgda's ``labels: confusable``).
- ``stratified-labels``: as ``stratified``, and the labels balanced too: (image, label) pairs
  assigned greedily by the clean head's logit gap, each label at most its class quota.
"""

from __future__ import annotations

import torch

CHOICES = ("influence-top", "influence-pool", "stratified", "stratified-labels")


def influence_scores(ctx) -> torch.Tensor:
    """(n, k) first-order gain of the attacker objective per (clean image, label) added
    (true labels set to −inf)."""
    from poisonprobe.attacks.tgda import val_loss_and_grad
    from poisonprobe.head.curvature import HeadCurvature
    from poisonprobe.head.objective import with_bias_column

    head = ctx.clean_head.to(ctx.z_train.device, torch.float64)
    z = ctx.z_train.double()
    y = ctx.train.y.long()
    _, grad = val_loss_and_grad(head, z, y, "ce")
    curv = HeadCurvature(head, z, ctx.victim.weight_decay)
    v_mat = curv.as_matrix(curv.solve_cg(grad, 500, tol=1e-10))  # [W | b], (k, d+1)
    s = with_bias_column(z) @ v_mat.T
    p = torch.softmax(head.logits(z), 1)
    score = s - (p * s).sum(1, keepdim=True)
    score[torch.arange(len(y)), y] = -torch.inf
    return score


def influence_start(ctx, pool: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, labels): the top ``n_p`` by influence (``pool`` 1) or ``n_p`` drawn from the
    top ``pool · n_p``."""
    best, labels = influence_scores(ctx).max(1)
    order = torch.argsort(best, descending=True)
    n = ctx.n_poison
    if pool == 1:
        idx = order[:n]
    else:
        gen = torch.Generator().manual_seed(seed)
        top = order[: pool * n]
        idx = top[torch.randperm(len(top), generator=gen)[:n]]
    return idx, labels[idx]


def stratified_start(ctx, balance_labels: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, labels): per-class quotas of base images (drawn by the run's seed), labels
    most confusable (``most_confusable_labels``), within per-label quotas with
    ``balance_labels``."""
    from poisonprobe.attacks.baselines import most_confusable_labels

    gen = ctx.generator("tgda")
    n, k = ctx.n_poison, ctx.n_classes
    y_all = ctx.train.y.long()
    quota = torch.full((k,), n // k, dtype=torch.long)
    quota[torch.randperm(k, generator=gen)[: n % k]] += 1
    picks = []
    for c in range(k):
        members = torch.nonzero(y_all == c)[:, 0]
        picks.append(members[torch.randperm(len(members), generator=gen)[: int(quota[c])]])
    idx = torch.cat(picks)
    if not balance_labels:
        return idx, most_confusable_labels(ctx, idx)
    logits = ctx.clean_head.logits(ctx.z_train[idx]).double()
    true = y_all[idx]
    gap = logits - logits.gather(1, true[:, None])
    gap[torch.arange(n), true] = -torch.inf
    room = quota[torch.randperm(k, generator=gen)].clone()
    labels = torch.full((n,), -1, dtype=torch.long)
    for flat in torch.argsort(gap.reshape(-1), descending=True).tolist():
        i, j = divmod(flat, k)
        if labels[i] < 0 and room[j] > 0 and j != int(true[i]):
            labels[i], room[j] = j, room[j] - 1
    for i in torch.nonzero(labels < 0)[:, 0].tolist():  # only its own class had room left
        labels[i] = int(gap[i].argmax())
    return idx, labels


def chosen_start(ctx, choice: str, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What ``init_poisons`` returns (indices, images, labels) for one of ``CHOICES``."""
    if choice.startswith("influence"):
        idx, labels = influence_start(ctx, 1 if choice == "influence-top" else 3, seed)
    else:
        idx, labels = stratified_start(ctx, choice == "stratified-labels")
    return idx, ctx.train.x[idx].clone(), labels.to(ctx.device)
