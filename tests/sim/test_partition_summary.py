import numpy as np
import pytest

from fedloom.cli.partition import format_report, report_partition
from fedloom.sim.partition_summary import label_entropy, summarise_partition


def test_label_entropy_numbers():
    entropy = label_entropy(np.array([[10, 0, 0, 0], [5, 5, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]]))
    np.testing.assert_allclose(entropy, [0.0, np.log(2), np.log(4), 0.0])


def test_summary_of_a_hand_made_partition():
    labels = np.array([0, 0, 1, 1, 2, 2])
    features = np.array([[0.0], [0.0], [1.0], [1.0], [2.0], [2.0]])
    parts = [np.array([0, 1]), np.array([2, 3, 4, 5])]
    summary = summarise_partition(parts, labels, 3, features=features, names=["a", "b"])
    assert summary["sizes"] == [2, 4] and summary["histogram"] == [[2, 0, 0], [0, 2, 2]]
    assert summary["label_entropy"] == [0.0, pytest.approx(np.log(2))]
    assert summary["global_label_entropy"] == pytest.approx(np.log(3))
    # client means 0 and 1.5 around the global mean 1 with variance 2/3: (2*1 + 4*0.25) / 6 / (2/3) = 0.75
    assert summary["feature_mean_spread"] == pytest.approx(0.75)
    assert summary["names"] == ["a", "b"] and summary["test_sizes"] is None


def test_report_partition_takes_groups_from_python():
    labels = np.arange(12) % 3
    groups = np.array(["north", "south", "east"] * 4)
    report = report_partition("natural", labels, 3, None, 0, groups=groups, test_fraction=0.25)
    assert report["clients"] == 3 and report["summary"]["names"] == ["east", "north", "south"]
    assert report["histogram"] == [[0, 0, 4], [4, 0, 0], [0, 4, 0]]
    assert report["summary"]["test_sizes"] == [1, 1, 1]
    text = format_report({"dataset": "table", **report, "by": "region"})
    assert "natural(by=region) over 3 clients" in text
    assert any(line.split()[:3] == ["0", "east", "4"] for line in text.splitlines())
