"""An agent checks each global model it receives against the lineage chain: the link must
recompute, extend the last link it verified (walking the models it skipped), name the
model it downloaded, and list its own accepted local model. Entries are built with the
same hashing the store uses, then altered the ways a lying aggregator would."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from fedloom.client.answers import NotFoundError
from fedloom.client.lineage_check import LineageChecker, LineageError, check_download
from fedloom.core.errors import ValidationError
from fedloom.core.lineage import LineageEntry, lineage_link

CONFIG = "c" * 64


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def chain(rounds: int, inputs_of=lambda r: ((f"agent-{r}", sha(f"local{r}"), 10),)) -> list[LineageEntry]:
    """Global models 0..rounds-1, each linked to the one before."""
    entries, previous = [], None
    for r in range(rounds):
        inputs = () if r == 0 else tuple(inputs_of(r))
        link = lineage_link("run", r, sha(f"model{r}"), 10 * r, previous, inputs, CONFIG)
        entries.append(LineageEntry("run", r, sha(f"model{r}"), 10 * r, previous, inputs, CONFIG, link))
        previous = link
    return entries


def fetcher(entries: list[LineageEntry]):
    """``fetch(start_round)``: the entry of the model that starts that round (global model start - 1)."""
    asked: list[int | str] = []

    def fetch(start: int | str) -> LineageEntry:
        asked.append(start)
        return entries[-1] if start == "latest" else entries[int(start) - 1]

    return fetch, asked


def checker(tmp_path, agent_id: str | None = "agent-1") -> LineageChecker:
    return LineageChecker(tmp_path, lambda: agent_id)


def test_a_consistent_chain_verifies_and_walks_skipped_models(tmp_path):
    entries = chain(6)
    fetch, asked = fetcher(entries)
    first = checker(tmp_path)
    first.verify(entries[1], entries[1].model_sha256, fetch)
    assert asked == []  # nothing to join yet
    first.verify(entries[5], entries[5].model_sha256, fetch)
    assert asked == [3, 4, 5]  # global models 2, 3 and 4 were walked to join 1 to 5
    head = json.loads((tmp_path / "lineage.json").read_text())["head"]
    assert head == {"run_id": "run", "round": 5, "link": entries[5].link}


def test_a_link_that_does_not_recompute_is_refused(tmp_path):
    entry = chain(3)[2]
    bad = dataclasses.replace(entry, num_samples=entry.num_samples + 1)
    with pytest.raises(LineageError, match="global model 2: its fields hash to"):
        checker(tmp_path).verify(bad, bad.model_sha256, fetcher(chain(3))[0])


def test_an_entry_for_another_model_is_refused(tmp_path):
    entry = chain(2)[1]
    with pytest.raises(LineageError, match="downloaded model hashes to"):
        checker(tmp_path).verify(entry, sha("something else"), fetcher(chain(2))[0])


def test_a_rewritten_history_is_refused_even_after_a_restart(tmp_path):
    honest = chain(4)
    checker(tmp_path).verify(honest[2], honest[2].model_sha256, fetcher(honest)[0])
    # the aggregator rewrites global model 1 and recomputes every later link consistently
    forged = chain(4, inputs_of=lambda r: ((f"agent-{r}", sha(f"forged{r}"), 10),))
    restarted = checker(tmp_path)  # the head survives in lineage.json
    with pytest.raises(LineageError, match="the chain was rewritten"):
        restarted.verify(forged[2], forged[2].model_sha256, fetcher(forged)[0])
    with pytest.raises(LineageError, match=r"global model 3: its previous link .* is not the link"):
        restarted.verify(forged[3], forged[3].model_sha256, fetcher(forged)[0])


def test_a_break_in_a_walked_model_is_named(tmp_path):
    honest = chain(5)
    checker(tmp_path).verify(honest[1], honest[1].model_sha256, fetcher(honest)[0])
    forged = chain(5, inputs_of=lambda r: ((f"agent-{r}", sha(f"x{r}" if r >= 2 else f"local{r}"), 10),))
    spliced = [*honest[:3], *forged[3:]]  # global model 3 onwards continue another history
    with pytest.raises(LineageError, match="global model 3: its previous link"):
        checker(tmp_path).verify(spliced[4], spliced[4].model_sha256, fetcher(spliced)[0])
    altered = [*honest[:2], dataclasses.replace(honest[2], num_samples=1), *honest[3:]]
    with pytest.raises(LineageError, match="global model 2: its fields hash to"):
        checker(tmp_path).verify(altered[4], altered[4].model_sha256, fetcher(altered)[0])


def test_the_agents_own_accepted_model_must_be_an_input(tmp_path):
    entries = chain(3)
    mine = checker(tmp_path, agent_id="agent-2")
    mine.verify(entries[1], entries[1].model_sha256, fetcher(entries)[0])
    mine.contributed(2, sha("local2"), 10)
    mine.verify(entries[2], entries[2].model_sha256, fetcher(entries)[0])  # listed: fine
    left_out = checker(tmp_path / "other", agent_id="agent-2")
    left_out.verify(entries[1], entries[1].model_sha256, fetcher(entries)[0])
    left_out.contributed(2, sha("a different local model"), 10)
    with pytest.raises(LineageError, match=r"accepted local model .* is not among the inputs"):
        left_out.verify(entries[2], entries[2].model_sha256, fetcher(entries)[0])


def test_no_lineage_is_tolerated_only_before_the_first_verified_link(tmp_path, caplog):
    def missing(_round):
        raise NotFoundError(404, "not_found", "no lineage")

    fresh = checker(tmp_path)
    check_download(fresh, missing, 1, sha("model0"))
    assert "serves no lineage" in caplog.text
    entries = chain(2)
    check_download(fresh, fetcher(entries)[0], 2, entries[1].model_sha256)
    with pytest.raises(LineageError, match="no longer serves its lineage"):
        check_download(fresh, missing, 3, sha("model2"))
    check_download(None, missing, 3, sha("model2"))  # --no-verify-lineage


BAD_ENTRIES = [
    ({"round": -1}, "'round'"),
    ({"round": True}, "'round'"),
    ({"num_samples": 2**64}, "'num_samples'"),
    ({"model_sha256": "ABC"}, "'model_sha256'"),
    ({"previous": 7}, "'previous'"),
    ({"link": "0" * 63}, "'link'"),
    ({"inputs": [["a", "b"]]}, "'inputs[0]'"),
    ({"inputs": [["", "0" * 64, 1]]}, "'inputs[0][0]'"),
    ({"inputs": [["a", "0" * 64, -1]]}, "'inputs[0][2]'"),
    ({"inputs": "all"}, "'inputs'"),
    ({"run_id": ""}, "'run_id'"),
]


@pytest.mark.parametrize(("change", "field"), BAD_ENTRIES)
def test_hostile_entries_are_refused_by_field(change, field):
    good = chain(2)[1].to_json()
    assert LineageEntry.from_json(good) == chain(2)[1]
    with pytest.raises(ValidationError, match=field.replace("[", r"\[").replace("]", r"\]")):
        LineageEntry.from_json({**good, **change})
