"""Group importance, selection, the four sparsity patterns, and masks on modules."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gwprune import prune


def random_conv_weight(generator, shape=(6, 4, 3, 3)) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64, generator=generator)


# ---- criteria --------------------------------------------------------------------------


def test_l1_l2_taylor_scores_match_per_group_loops():
    generator = torch.Generator().manual_seed(0)
    weight = random_conv_weight(generator)
    grad = torch.randn(weight.shape, dtype=torch.float64, generator=generator)
    l1, l2, taylor = (prune.group_scores(weight, name, grad) for name in ("l1", "l2", "taylor"))
    _, channels, kh, kw = weight.shape
    for c in range(channels):
        for i in range(kh):
            for j in range(kw):
                group = (c * kh + i) * kw + j  # flat (c, i, j) column of weight.reshape(Cout, -1)
                column = weight[:, c, i, j]
                assert l1[group] == pytest.approx(column.abs().sum().item())
                assert l2[group] == pytest.approx(column.pow(2).sum().sqrt().item())
                assert taylor[group] == pytest.approx(
                    (column * grad[:, c, i, j]).abs().sum().item()
                )


def test_linear_scores_are_per_input_feature():
    weight = torch.tensor([[1.0, -2.0, 0.0], [3.0, 0.0, 0.0]])
    assert prune.group_scores(weight, "l1").tolist() == [4.0, 2.0, 0.0]
    torch.testing.assert_close(
        prune.group_scores(weight, "l2"), torch.tensor([10.0**0.5, 2.0, 0.0])
    )


def test_half_precision_scores_accumulate_in_float32():
    weight = torch.full((4096, 2), 100.0, dtype=torch.float16)  # column sum overflows float16
    scores = prune.group_scores(weight, "l1")
    assert scores.dtype == torch.float32
    assert scores.tolist() == [409600.0, 409600.0]


def test_taylor_without_grad_is_a_clear_error():
    with pytest.raises(ValueError, match="criterion 'taylor' needs the weight's gradient"):
        prune.group_scores(torch.randn(3, 4), "taylor")
    linear = nn.Linear(4, 3)
    with pytest.raises(ValueError, match="weight.grad is None"):
        prune.layer_group_scores(linear, "taylor")


def test_taylor_uses_grad_of_module():
    generator = torch.Generator().manual_seed(1)
    linear = nn.Linear(5, 3)
    x = torch.randn(8, 5, generator=generator)
    linear(x).pow(2).sum().backward()
    expected = (linear.weight.detach() * linear.weight.grad).abs().sum(dim=0)
    torch.testing.assert_close(prune.layer_group_scores(linear, "taylor"), expected)


def test_taylor_on_a_masked_module_reads_weight_orig_grad():
    generator = torch.Generator().manual_seed(2)
    linear = nn.Linear(5, 3)
    prune.apply_mask(linear, torch.tensor([True, False, True, True, False]))
    linear(torch.randn(8, 5, generator=generator)).sum().backward()
    scores = prune.layer_group_scores(linear, "taylor")
    assert scores[1] == 0 and scores[4] == 0
    assert bool((scores[[0, 2, 3]] > 0).all())


def test_callable_criterion():
    weight = torch.randn(3, 6)
    scores = prune.group_scores(weight, lambda w, g: torch.arange(w.shape[1], dtype=torch.float32))
    assert scores.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert prune.select_by_ratio(scores, 0.5).keep_idx.tolist() == [3, 4, 5]
    with pytest.raises(
        ValueError, match=r"criterion callable must return a tensor of shape \(6,\)"
    ):
        prune.group_scores(weight, lambda w, g: torch.ones(3))


def test_unknown_criterion_and_bad_weight():
    with pytest.raises(ValueError, match="criterion must be one of"):
        prune.group_scores(torch.randn(3, 4), "l3")
    with pytest.raises(ValueError, match="weight must be a linear"):
        prune.group_scores(torch.randn(3, 4, 5), "l1")
    with pytest.raises(TypeError, match="weight must be a torch.Tensor"):
        prune.group_scores([[1.0]], "l1")


# ---- selection -------------------------------------------------------------------------


@pytest.mark.parametrize("keep_ratio,expected_count", [(0.5, 18), (0.25, 9), (1.0, 36), (0.01, 1)])
def test_select_by_ratio_keeps_the_best_groups(keep_ratio, expected_count):
    generator = torch.Generator().manual_seed(3)
    scores = torch.rand(36, generator=generator)
    selection = prune.select_by_ratio(scores, keep_ratio)
    assert selection.num_kept == expected_count
    assert torch.equal(selection.keep_idx, torch.sort(selection.keep_idx).values)
    assert selection.group_mask.dtype == torch.bool
    assert selection.group_mask.nonzero().reshape(-1).tolist() == selection.keep_idx.tolist()
    if expected_count < 36:
        assert scores[selection.group_mask].min() > scores[~selection.group_mask].max()


def test_select_by_ratio_breaks_ties_deterministically():
    selection = prune.select_by_ratio(torch.zeros(10), 0.3)
    assert selection.keep_idx.tolist() == [0, 1, 2]


@pytest.mark.parametrize("bad", [0, 0.0, -0.5, 1.5])
def test_keep_ratio_out_of_range(bad):
    with pytest.raises(ValueError, match="keep_ratio must be in"):
        prune.select_by_ratio(torch.rand(4), bad)


def test_keep_ratio_of_wrong_type():
    with pytest.raises(TypeError, match="keep_ratio must be a number"):
        prune.select_by_ratio(torch.rand(4), "0.5")


def test_select_global_uses_one_threshold():
    generator = torch.Generator().manual_seed(4)
    scores = {
        "small": torch.rand(20, generator=generator),
        "large": torch.rand(30, generator=generator) + 0.5,
    }
    selections = prune.select_global(scores, 0.4, min_keep_per_layer=0)
    assert sum(s.num_kept for s in selections.values()) == 20
    kept = torch.cat([scores[name][s.group_mask] for name, s in selections.items()])
    dropped = torch.cat([scores[name][~s.group_mask] for name, s in selections.items()])
    assert kept.min() > dropped.max()


def test_select_global_honours_min_keep_per_layer():
    scores = {"weak": torch.full((10,), 0.01), "strong": torch.linspace(1, 2, 10)}
    without_minimum = prune.select_global(scores, 0.3, min_keep_per_layer=0)
    assert without_minimum["weak"].num_kept == 0
    selections = prune.select_global(scores, 0.3, min_keep_per_layer=2)
    assert selections["weak"].num_kept == 2
    assert selections["strong"].num_kept == 4  # 6 kept in all
    assert selections["strong"].keep_idx.tolist() == [6, 7, 8, 9]
    with pytest.raises(ValueError, match="min_keep_per_layer must be >= 0"):
        prune.select_global(scores, 0.3, min_keep_per_layer=-1)


def test_select_groups_over_modules():
    torch.manual_seed(5)
    layers = {"conv": nn.Conv2d(3, 4, 3), "fc": nn.Linear(12, 2)}
    per_layer = prune.select_groups(layers, 0.5, criterion="l1")
    assert per_layer["conv"].num_kept == 14 and per_layer["fc"].num_kept == 6
    global_ = prune.select_groups(layers, 0.5, scope="global", min_keep_per_layer=3)
    assert sum(s.num_kept for s in global_.values()) == 20
    assert min(s.num_kept for s in global_.values()) >= 3
    with pytest.raises(ValueError, match="scope must be"):
        prune.select_groups(layers, 0.5, scope="model")


# ---- patterns on F = weight.reshape(out, -1) -------------------------------------------


def test_patterns_have_equal_density_and_their_shapes():
    generator = torch.Generator().manual_seed(6)
    weight = random_conv_weight(generator, (8, 8, 2, 2))  # F is 8 x 32
    masks = {
        "element": prune.elementwise_mask(weight, 0.5),
        "2:4": prune.nm_mask(weight, 2, 4),
        "block": prune.blockwise_mask(weight, 0.5, (4, 4)),
        "group": prune.groupwise_mask(weight, 0.5),
    }
    for name, mask in masks.items():
        assert mask.shape == weight.shape and mask.dtype == torch.bool, name
        assert mask.float().mean().item() == 0.5, name

    columns = masks["group"].reshape(8, -1)
    assert bool((columns == columns[:1]).all())  # whole columns kept or pruned
    blocks = masks["block"].reshape(2, 4, 8, 4).float().mean(dim=(1, 3))
    assert set(blocks.reshape(-1).tolist()) <= {0.0, 1.0}  # whole 4x4 tiles
    runs = masks["2:4"].reshape(8, 8, 4)
    assert bool((runs.sum(dim=-1) == 2).all())


def test_elementwise_keeps_the_largest_magnitudes():
    generator = torch.Generator().manual_seed(7)
    weight = torch.randn(5, 9, generator=generator)
    mask = prune.elementwise_mask(weight, 0.3)
    assert mask.sum().item() == 14  # round(0.3 * 45)
    assert weight.abs()[mask].min() > weight.abs()[~mask].max()


def test_nm_keeps_largest_in_each_run_and_handles_a_short_tail():
    weight = torch.tensor([[1.0, -5.0, 2.0, 0.5, 3.0, -4.0], [0.1, 0.2, 0.3, 0.4, 9.0, 8.0]])
    mask = prune.nm_mask(weight, 2, 4)
    expected = [[False, True, True, False, True, True], [False, False, True, True, True, True]]
    assert mask.tolist() == expected
    one_of_three = prune.nm_mask(weight, 1, 3)
    assert one_of_three.sum(dim=1).tolist() == [2, 2]
    with pytest.raises(ValueError, match="0 < n <= m"):
        prune.nm_mask(weight, 5, 4)


def test_blockwise_keeps_blocks_with_largest_norm():
    weight = torch.zeros(4, 4)
    weight[:2, 2:] = 3.0  # the strongest block
    weight[2:, :2] = 1.0
    weight[0, 0] = 0.5
    mask = prune.blockwise_mask(weight, 0.5, (2, 2))
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[:2, 2:] = True
    expected[2:, :2] = True
    assert torch.equal(mask, expected)
    edge = prune.blockwise_mask(torch.randn(5, 7), 0.5, (2, 3))  # edge blocks are smaller
    assert edge.shape == (5, 7)
    with pytest.raises(ValueError, match="block_shape must be two positive ints"):
        prune.blockwise_mask(weight, 0.5, (0, 2))


def test_groupwise_mask_matches_selection():
    generator = torch.Generator().manual_seed(8)
    weight = random_conv_weight(generator)
    selection = prune.select_by_ratio(prune.group_scores(weight, "l1"), 0.25)
    mask = prune.groupwise_mask(weight, 0.25, "l1")
    assert torch.equal(mask, selection.weight_mask(weight))
    assert torch.equal(mask.reshape(6, -1)[0], selection.group_mask)


# ---- masks on modules ------------------------------------------------------------------


def test_apply_mask_keeps_pruned_weights_zero_during_fine_tuning():
    generator = torch.Generator().manual_seed(9)
    conv = nn.Conv2d(3, 4, 3)
    mask = prune.groupwise_mask(conv.weight, 0.5)
    prune.apply_mask(conv, mask)
    assert hasattr(conv, "weight_orig") and torch.equal(conv.weight_mask.bool(), mask)
    optimizer = torch.optim.SGD(conv.parameters(), lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        x = torch.randn(2, 3, 6, 6, generator=generator)
        conv(x).pow(2).mean().backward()
        optimizer.step()
    assert bool((conv.weight[~mask] == 0).all())
    assert bool((conv.weight[mask] != 0).all())

    removed = prune.remove_masks(nn.Sequential(conv))
    assert removed == ["0.weight"]
    assert isinstance(conv.weight, nn.Parameter) and not hasattr(conv, "weight_orig")
    assert bool((conv.weight[~mask] == 0).all())
    x = torch.randn(1, 3, 5, 5, generator=generator)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight * mask, conv.bias))


def test_apply_mask_broadcasts_a_group_mask_and_combines_masks():
    linear = nn.Linear(6, 3)
    prune.apply_mask(linear, torch.tensor([1, 1, 0, 1, 0, 1]))
    assert linear.weight_mask.shape == (3, 6)
    assert linear.weight_mask[:, 2].sum() == 0 and linear.weight_mask[:, 0].sum() == 3
    prune.apply_mask(linear, torch.tensor([0, 1, 1, 1, 1, 1]))
    assert linear.weight_mask[0].tolist() == [0, 1, 0, 1, 0, 1]


def test_apply_mask_errors():
    linear = nn.Linear(6, 3)
    with pytest.raises(ValueError, match=r"mask has shape \(5,\)"):
        prune.apply_mask(linear, torch.ones(5))
    with pytest.raises(TypeError, match="mask must be a torch.Tensor"):
        prune.apply_mask(linear, [1] * 6)
    with pytest.raises(TypeError, match="no tensor attribute 'kernel'"):
        prune.apply_mask(linear, torch.ones(6), name="kernel")


def test_apply_selection_and_remove_masks_on_a_model():
    torch.manual_seed(10)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    layers = {"0": model[0], "2": model[2]}
    selections = prune.select_groups(layers, 0.5)
    prune.apply_selection(layers, selections)
    assert sorted(prune.remove_masks(model)) == ["0.weight", "2.weight"]
    for name, selection in selections.items():
        columns = layers[name].weight.detach().reshape(layers[name].weight.shape[0], -1)
        assert bool((columns[:, ~selection.group_mask] == 0).all())
    assert prune.remove_masks(model) == []
    with pytest.raises(KeyError, match="not in layers"):
        prune.apply_selection({}, selections)
