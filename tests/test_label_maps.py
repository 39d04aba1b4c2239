# Copyright (c) 2026 The TDGAN bundle authors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""New label maps: far from every source map, seeded, with lesions moved inside their host classes, 2D and 3D."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from scripts.data.checks import InputError
from scripts.data.demo import procedural_anatomy
from scripts.data.label_maps import (
    MIN_STRATUM_MAPS,
    LabelMapTooCloseError,
    calibrate_ceiling,
    check_far_from_sources,
    check_settings,
    label_map_similarity,
    lesion_prior,
    new_label_bank,
    new_label_maps,
)
from scripts.tools.measure_label_maps import measure

DEMO = {"relocatable": [3], "hosts": [1], "flip_axes": [1]}  # the demo's lesion class, brain class, left-right axis


@pytest.fixture(scope="module")
def sources() -> torch.Tensor:
    """16 demo-like 32x32 label maps (background, brain, csf, lesion), one subject each."""
    maps = [procedural_anatomy(np.random.default_rng([7, i]), 32)["label"] for i in range(16)]
    return torch.stack([torch.from_numpy(m.astype(np.uint8))[None] for m in maps])


def test_similarity_is_the_mean_foreground_dice_computed_by_hand():
    a = torch.zeros(1, 1, 4, 4, dtype=torch.uint8)
    b = torch.zeros_like(a)
    a[..., 0, :] = 1  # class 1: 4 pixels in row 0
    a[..., 3, :2] = 2  # class 2: 2 pixels, absent from b
    b[..., 0, 2:] = 1  # class 1: 2 of a's pixels ...
    b[..., 1, :2] = 1  # ... and 2 others
    # class 1: Dice 2 * 2 / (4 + 4) = 0.5; class 2 (only in a): 0; class 3 (in neither) left out
    assert float(label_map_similarity(a, b)[0, 0]) == pytest.approx((0.5 + 0.0) / 2)
    assert float(label_map_similarity(a, a)[0, 0]) == pytest.approx(1.0)
    empty = torch.zeros_like(a)
    assert float(label_map_similarity(empty, empty)[0, 0]) == 1.0  # two all-background maps are identical


def test_a_source_map_passed_as_new_is_refused_under_an_explicit_constant(sources):
    with pytest.raises(LabelMapTooCloseError, match=r"constant .*map 0: mean foreground Dice 1\.000 > 0\.500"):
        check_far_from_sources(sources[3:4], sources, ceiling=0.5)


def test_a_slightly_shifted_source_map_is_refused(sources):
    shifted = torch.roll(sources[5:6], shifts=1, dims=-1)
    with pytest.raises(LabelMapTooCloseError, match="closer to a real source map"):
        check_far_from_sources(shifted, sources)


def test_every_new_map_is_within_the_calibrated_ceiling_against_every_source(sources):
    made = new_label_maps(sources, 12, seed=0, **DEMO)
    ceiling = calibrate_ceiling(sources)
    assert made.ceiling == ceiling
    similarity = label_map_similarity(made.maps, sources)
    assert similarity.shape == (12, 16)
    assert float(similarity.max()) <= ceiling.mean
    assert torch.allclose(made.nearest_similarity, similarity.max(dim=1).values)
    assert torch.allclose(check_far_from_sources(made.maps, sources), made.nearest_similarity)


def test_new_maps_are_uint8_of_the_source_shape_with_only_source_classes(sources):
    made = new_label_maps(sources, 6, seed=3, **DEMO)
    assert made.maps.dtype == torch.uint8
    assert made.maps.shape == (6, 1, 32, 32)
    assert set(made.maps.unique().tolist()) <= set(sources.unique().tolist())
    assert all((m == 1).any() for m in made.maps)  # every map keeps an anatomy


def test_same_seed_gives_the_same_maps_and_leaves_the_global_rngs_alone(sources):
    torch.manual_seed(123)
    np.random.seed(123)
    torch_state, numpy_state = torch.random.get_rng_state(), np.random.get_state()
    first = new_label_maps(sources, 5, seed=11, **DEMO)
    second = new_label_maps(sources, 5, seed=11, **DEMO)
    other = new_label_maps(sources, 5, seed=12, **DEMO)
    assert torch.equal(first.maps, second.maps)
    assert first.provenance == second.provenance
    assert not torch.equal(first.maps, other.maps)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert np.random.get_state()[1].tolist() == numpy_state[1].tolist()


def test_refuses_when_no_draw_gets_below_the_ceiling(sources):
    with pytest.raises(LabelMapTooCloseError, match=r"3 draws .*constant .*best draw: mean foreground Dice 0\.\d{3}"):
        new_label_maps(sources, 2, seed=0, ceiling=0.05, max_draws=3, **DEMO)


def _square_maps() -> torch.Tensor:
    """Two 24x24 maps: a brain square (class 1) on the left with a 2x2 lesion, and one on the right with a 3x3 one."""
    maps = torch.zeros(2, 1, 24, 24, dtype=torch.uint8)
    maps[0, 0, 4:20, 1:11] = 1
    maps[0, 0, 8:10, 4:6] = 3
    maps[1, 0, 4:20, 13:23] = 1
    maps[1, 0, 12:15, 17:20] = 3
    return maps


def test_lesions_come_from_the_other_map_and_land_inside_the_host_class():
    src = _square_maps()
    brain = [(m[0] == 1) | (m[0] == 3) for m in src]  # the brain each anatomy keeps once its lesion is removed
    # no deformation: the anatomy stays where it was, so where each lesion landed can be checked exactly
    still = {"rotate": 0.0, "scale": 0.0, "translate": 0.0, "elastic_magnitude": 0.0}
    made = new_label_maps(src, 8, seed=5, relocatable=[3], hosts=[1], ceiling=1.0, lesion_stretch=0.0, **still)
    moved = False
    for m in made.maps[:, 0]:
        left = bool(m[10, 5] != 0)  # which anatomy this map has
        lesion = m == 3
        assert (m != 0).equal(brain[0 if left else 1])  # the anatomy is untouched
        assert bool((~brain[0 if left else 1] & lesion).any()) is False  # the lesion lies inside the brain
        assert int(lesion.sum()) == (9 if left else 4)  # the OTHER map's lesion, moved whole
        assert ndimage.label(lesion.numpy())[1] == 1
        moved |= not lesion.equal(src[1 if left else 0, 0] == 3)
    assert moved


def test_stretched_lesions_change_shape_and_still_land_inside_the_host_class():
    src = _square_maps()
    still = {"rotate": 0.0, "scale": 0.0, "translate": 0.0, "elastic_magnitude": 0.0}
    made = new_label_maps(src, 16, seed=2, relocatable=[3], hosts=[1], ceiling=1.0, lesion_stretch=0.5, **still)
    sizes = set()
    for m in made.maps[:, 0]:
        left = bool(m[10, 5] != 0)
        lesion = m == 3
        assert bool((~((src[0 if left else 1, 0] == 1) | (src[0 if left else 1, 0] == 3)) & lesion).any()) is False
        sizes.add(int(lesion.sum()))
    assert len(sizes) >= 4  # not only the two sources' sizes 4 and 9: the shapes themselves change
    assert "stretched by up to +-0.5" in made.provenance[0]["chain"][-1]


def _thin_brain_maps() -> torch.Tensor:
    """Two 32x32 maps whose brain is a band 4 pixels high with CSF above and below (background around): each holds
    a 6x6 lesion that fits nowhere wholly inside the other's brain."""
    maps = torch.zeros(2, 1, 32, 32, dtype=torch.uint8)
    maps[:, 0, 6:26, 2:30] = 2  # CSF
    maps[:, 0, 14:18, 2:30] = 1  # a thin brain band
    maps[0, 0, 12:18, 4:10] = 3  # the lesions: over the band and the CSF above it, as at a ventricle's edge
    maps[1, 0, 12:18, 20:26] = 3
    return maps


def test_a_lesion_that_fits_nowhere_inside_the_host_is_dropped_or_reaches_over_a_neighbouring_class():
    src = _thin_brain_maps()
    still = {"rotate": 0.0, "scale": 0.0, "translate": 0.0, "elastic_magnitude": 0.0, "lesion_stretch": 0.0}
    dropped = new_label_maps(src, 6, seed=1, relocatable=[3], hosts=[1], ceiling=1.0, **still)
    assert int((dropped.maps == 3).sum()) == 0  # the default: dropped, so large lesions go missing
    assert "1 dropped: no such place" in dropped.provenance[0]["chain"][-1]
    made = new_label_maps(src, 6, seed=1, relocatable=[3], hosts=[1], ceiling=1.0, lesion_spill=0.4, **still)
    for m in made.maps[:, 0]:
        lesion = m == 3
        assert int(lesion.sum()) == 36  # placed whole
        under = src[0, 0][lesion]  # both anatomies are alike once their lesion is filled: band 14-17, CSF around
        brain_rows = lesion[14:18].sum()
        assert brain_rows >= 0.6 * 36 and bool((under == 0).any()) is False  # at most 40 % outside, none on background
    assert "reaching over neighbouring classes, at most 0.4" in made.provenance[0]["chain"][-1]
    with pytest.raises(ValueError, match="lesion_spill must be a number in \\[0, 1\\)"):
        new_label_maps(src, 1, relocatable=[3], hosts=[1], lesion_spill=1.0)


def test_an_unknown_label_map_setting_is_refused_in_one_line_naming_the_known_ones():
    assert check_settings(None) == {} and check_settings({"hosts": [1], "lesion_spill": 0.2}) == {
        "hosts": [1],
        "lesion_spill": 0.2,
    }
    with pytest.raises(InputError, match=r"unknown setting\(s\) \['lesion_spil'\]; known: relocatable, hosts, ") as e:
        check_settings({"hosts": [1], "lesion_spil": 0.2})
    assert "lesion_spill" in str(e.value) and "sources" not in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(InputError, match="unknown setting"):  # the visit's label bank checks it before drawing a map
        new_label_bank(_thin_brain_maps(), 2, hosts=[1], **{"relocatable": [3], "subject": "x"})


def _top_half_lesions(n: int = 12) -> torch.Tensor:
    """``n`` 32x32 maps of one large brain square whose single 2x2 lesion always lies in its top rows."""
    maps = torch.zeros(n, 1, 32, 32, dtype=torch.uint8)
    maps[:, 0, 2:30, 2:30] = 1
    for i in range(n):
        col = 4 + 2 * i
        maps[i, 0, 4:6, col : col + 2] = 3
    return maps


def test_the_lesion_prior_places_lesions_where_the_center_has_them():
    src = _top_half_lesions()
    still = {"rotate": 0.0, "scale": 0.0, "translate": 0.0, "elastic_magnitude": 0.0, "lesion_stretch": 0.0}
    rows = {}
    for prior in (None, 0.05):
        made = new_label_maps(
            src, 40, seed=3, relocatable=[3], hosts=[1], ceiling=1.0, lesion_prior_sigma=prior, **still
        )
        rows[prior] = np.mean([float((m[0] == 3).nonzero()[:, 0].float().mean()) for m in made.maps])
    assert rows[0.05] < 9  # near the sources' lesion rows 4-5
    assert rows[None] > 11  # anywhere inside rows 2-29
    prior = lesion_prior(src.numpy(), [3], 0.05)
    assert prior.max() == pytest.approx(1.0) and prior.min() == pytest.approx(0.05)  # scaled, with its floor


def test_maps_with_and_without_a_class_get_the_ceiling_of_their_kind():
    maps = [procedural_anatomy(np.random.default_rng([9, i]), 32)["label"] for i in range(40)]
    maps = torch.stack([torch.from_numpy(m.astype(np.uint8))[None] for m in maps])
    free = maps.clone()
    free[free == 3] = 1  # the same anatomies without their lesions
    mixed = torch.cat([maps[:20], free[20:]])
    ceiling = calibrate_ceiling(mixed)
    assert set(ceiling.by_content) == {(1, 2), (1, 2, 3)}
    # maps without a lesion are closer to each other (a lesion in one map only counts with Dice 0)
    assert ceiling.by_content[(1, 2)] > ceiling.mean > ceiling.by_content[(1, 2, 3)]
    kinds = [(1, 2, 3) if bool((m == 3).any()) else (1, 2) for m in mixed]
    assert ceiling.mean_for(mixed).tolist() == pytest.approx([ceiling.by_content[k] for k in kinds])
    assert set(ceiling.record()["mean_foreground_dice_by_classes_held"]) == {"1,2", "1,2,3"}
    # a kind held by fewer than MIN_STRATUM_MAPS maps keeps the center's overall quantile
    rare = calibrate_ceiling(torch.cat([maps[: MIN_STRATUM_MAPS - 1], free[10:40]]))
    assert set(rare.by_content) == {(1, 2)}
    assert float(rare.mean_for(maps[:1])[0]) == rare.mean


def test_new_maps_keep_the_centers_share_of_maps_with_a_lesion():
    maps = [procedural_anatomy(np.random.default_rng([9, i]), 32)["label"] for i in range(40)]
    maps = torch.stack([torch.from_numpy(m.astype(np.uint8))[None] for m in maps])
    free = maps.clone()
    free[free == 3] = 1
    mixed = torch.cat([maps[:20], free[20:]])  # half the patients have a lesion
    made = new_label_maps(mixed, 60, seed=0, **DEMO)
    share = float((made.maps == 3).flatten(1).any(1).float().mean())
    assert 0.3 <= share <= 0.7
    assert not new_label_maps(mixed, 2, seed=0, ceiling_by_content=False, **DEMO).ceiling.by_content  # one for all


def test_provenance_names_the_transform_chain_and_no_source(sources):
    made = new_label_maps(sources, 3, seed=0, **DEMO)
    for entry, nearest in zip(made.provenance, made.nearest_similarity.tolist()):
        assert set(entry) == {"kind", "chain", "similarity", "similarity_to_nearest_source", "ceiling", "draws"}
        assert entry["similarity_to_nearest_source"] == pytest.approx(nearest, abs=1e-3)
        assert any("Rand2DElastic" in step for step in entry["chain"])
        assert any("classes [3] from another source map" in step for step in entry["chain"])
        json.dumps(entry)  # goes into a dataset.json as is


def test_new_label_bank_holds_count_maps_all_far_from_the_sources(sources):
    bank = new_label_bank(sources, 4, seed=2, **DEMO).maps
    assert bank.shape == (4, 1, 32, 32) and bank.dtype == torch.uint8
    assert torch.equal(bank, new_label_maps(sources, 4, seed=2, **DEMO).maps)
    assert float(label_map_similarity(bank, sources).max()) <= calibrate_ceiling(sources).mean


def test_three_dimensional_maps_are_made_and_checked():
    grid = torch.stack(torch.meshgrid(*[torch.arange(16.0)] * 3, indexing="ij"))
    maps = []
    for i in range(6):
        centre = torch.tensor([8.0, 8.0, 8.0]) + torch.tensor([i % 3 - 1.0, (i // 3) * 2 - 1.0, 0.0])
        brain = ((grid - centre.view(3, 1, 1, 1)) ** 2).sum(0) <= (4.5 + i % 2) ** 2
        m = brain.to(torch.uint8)
        m[tuple(int(c) for c in centre)] = 3
        m[int(centre[0]) + 1, int(centre[1]), int(centre[2])] = 3
        maps.append(m[None])
    src = torch.stack(maps)
    made = new_label_maps(src, 3, seed=0, relocatable=[3], hosts=[1], ceiling=0.9, elastic_magnitude=0.06)
    assert made.maps.shape == (3, 1, 16, 16, 16) and made.maps.dtype == torch.uint8
    assert set(made.maps.unique().tolist()) <= {0, 1, 3}
    assert float(label_map_similarity(made.maps, src).max()) <= 0.9
    assert any("Rand3DElastic" in step for step in made.provenance[0]["chain"])


def test_bad_inputs_are_refused_with_what_was_expected(sources):
    with pytest.raises(ValueError, match="integer label maps"):
        new_label_maps(sources.float(), 2)
    with pytest.raises(ValueError, match="need host classes"):
        new_label_maps(sources, 2, relocatable=[3])
    with pytest.raises(ValueError, match="N >= 1, 1, \\*spatial"):
        check_far_from_sources(sources[:, 0], sources)


def test_the_ceiling_measurement_reads_the_centers_files_and_keeps_new_maps_below_it(demo_root):
    got = measure(demo_root, count=3, seed=0, ceilings=[0.9], **DEMO)
    assert set(got["centers"]) == {"center_a", "center_b", "center_c"}
    center = got["centers"]["center_a"]
    assert center["training_maps"] == 8 and center["subjects"] == 8
    assert 0.0 < center["real_to_nearest_other_subject"]["median"] < 1.0
    calibrated = center["ceilings"]["quantile 0.5"]
    assert calibrated["ceiling"]["mean_foreground_dice"] == pytest.approx(
        center["real_to_nearest_other_subject"]["median"], abs=1e-3
    )
    assert calibrated["new_to_nearest_source"]["max"] <= calibrated["ceiling"]["mean_foreground_dice"]
    assert center["ceilings"]["constant 0.9"]["new_to_nearest_source"]["max"] <= 0.9
    assert set(center["real_to_nearest_other_subject_per_class"]) <= {"1", "2", "3"}
