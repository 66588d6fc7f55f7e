"""Issue 21 item 7: per-modality balance is searched, and each trial records how much the finished
model relies on each modality.

- The space: ``balance.<modality>`` is asked only when the trial uses an op of that modality, lands in
  the policy's ``balance`` under the same name, and ``magnitude × balance`` stays inside every op's
  declared magnitude range; a fixed balance works as before.
- The reliance probes: validation accuracy with the image blanked (grey) and with the text blanked
  (every word masked), checked on hand-made models that ignore one modality, then end to end in a real
  (tiny) training run's final Tune report, routed to searched and baseline trials only, and logged to
  MLflow at the last epoch.
No Ray is started here.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
import yaml
from torch import nn

from autoaug import ops
from autoaug.batch import MultimodalBatch, TextVocabulary
from autoaug.policy import Policy
from autoaug.search.record_schema import FINAL_METRICS, IMAGE_BLANKED_METRIC, TEXT_BLANKED_METRIC
from autoaug.search.space import MODALITIES, balance_param, load_space, used_ops

optuna.logging.set_verbosity(optuna.logging.WARNING)

TRIALS = 200


def _sample(space, count: int = TRIALS, seed: int = 11):
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(count):
        trial = study.ask()
        space.suggest(trial)
        yield trial.params
        study.tell(trial, 0.0)


def _modality(op: str) -> str:
    return ops.op_class(op).modality


def _write_space(tmp_path: Path, balance: dict, name: str = "space.yaml") -> Path:
    data = yaml.safe_load((Path(__file__).parents[1] / "search_spaces" / "vlm_balanced.yaml").read_text())
    data["balance"] = balance
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


# ====================================================================== the searched balance
def test_a_balance_is_asked_exactly_when_the_trial_uses_an_op_of_its_modality():
    """Catches: a balance asked in every trial (a parameter that scales nothing, which TPE would model
    as if it mattered), one asked for the modalities of the ops *considered* rather than used, and a
    fixed balance (cross: 1.0) asked at all."""
    space = load_space("vlm_balanced")
    assert space.model.searched_balances() == ["vision", "text"]
    asked = {modality: [0, 0] for modality in MODALITIES}  # [trials with the param, trials without]
    for params in _sample(space):
        modalities = {_modality(op) for op in used_ops(space.model, params)}
        for modality in MODALITIES:
            has = balance_param(modality) in params
            expected = modality in modalities and modality in space.model.searched_balances()
            assert has == expected, (modality, sorted(modalities), params)
            asked[modality][0 if has else 1] += 1
            if has:
                low, high = space.model.balance[modality]
                assert low <= params[balance_param(modality)] <= high
    # both branches happen: with 12 of 19 ops vision and 4 text, and 1-3 ops a trial, each modality is
    # in some trials and missing from others (a test that only ever saw one branch could not fail)
    assert asked["vision"][0] > 0 and asked["vision"][1] > 0 and asked["text"][0] > 0 and asked["text"][1] > 0
    assert asked["cross"][0] == 0


@pytest.mark.parametrize("balance", [
    {"vision": [0.5, 1.0], "text": [0.5, 1.0], "cross": 1.0},   # the shipped vlm_balanced
    {"vision": [0.8, 1.6], "text": [0.25, 0.5], "cross": 2.0},  # stronger than 1 and weaker: the division matters
])
def test_magnitude_times_balance_stays_inside_every_ops_declared_range(balance, tmp_path):
    """For 200 RandomSampler trials, every entry's run magnitude (``min(magnitude × balance, 1)``, as
    `Policy` computes it at a schedule's peak) is within the op's declared range. Catches: a sampled
    magnitude range not divided by the balance range's ends (with vision up to 1.6, a magnitude at the
    declared top runs 1.6× past it; with text down to 0.25, a magnitude at the declared low end runs
    below it), and division by the wrong end (low by the strongest balance)."""
    space = load_space(_write_space(tmp_path, balance))
    declared = space.model.ops
    checked = 0
    for params in _sample(space):
        policy = Policy.from_dict(space.policy_data(params, name="sampled"))
        for entry in policy.config.entries:
            multiplier = getattr(policy.config.balance, entry.modality)
            run_magnitude = min(entry.magnitude * multiplier, 1.0)
            low, high = declared[entry.op].magnitude
            assert run_magnitude <= high + 1e-9, (entry.op, entry.magnitude, multiplier, high)
            assert run_magnitude >= low - 1e-9, (entry.op, entry.magnitude, multiplier, low)
            checked += 1
    assert checked >= TRIALS  # at least one op per trial


def test_the_shipped_balanced_space_divides_each_magnitude_range_by_the_balance_ends():
    """The rule on numbers a reader can check: vision [0.5, 1] makes pixel_translate's declared
    [0.1, 0.6] a sampled [0.2, 0.6] (0.2 × 0.5 = 0.1 at the weakest balance, 0.6 × 1 = 0.6 at the
    strongest); an op whose range starts at 0 keeps its range; the fixed cross balance of 1 changes nothing."""
    space = load_space("vlm_balanced")
    assert space.sampling_ranges("pixel_translate").magnitude == pytest.approx((0.2, 0.6))
    assert space.sampling_ranges("pixel_random_resized_crop").magnitude == pytest.approx((0.4, 0.8))
    assert space.sampling_ranges("text_token_dropout").magnitude == pytest.approx((0.0, 0.5))
    assert space.sampling_ranges("embedding_noise").magnitude == pytest.approx((0.0, 0.5))
    # apart from the balance, vlm_balanced is vlm_default (the same ops, ranges and schedules)
    default = load_space("vlm_default").canonical()
    balanced = load_space("vlm_balanced").canonical()
    for field in ("ops", "entries", "schedules", "clean_fraction", "augmented_loss_weight", "metric"):
        assert balanced[field] == default[field], field


def test_the_policy_carries_the_trials_balance_under_the_same_name_and_one_for_an_unused_modality():
    """The policy is a pure function of the params: ``balance.<modality>`` is the param where asked, 1
    (scales nothing) where the trial has no op of that modality, the fixed value for a fixed one; MLflow
    logs the policy's balance under the param's own name (`flatten_policy`). Catches: a policy built with
    the declared range's low end for an unasked modality (an export that reads "text at half strength"
    for a policy without text ops), and a logged balance that differs from the one the policy runs."""
    from autoaug.search.records import flatten_policy

    space = load_space("vlm_balanced")
    seen_unused = seen_used = 0
    for params in _sample(space, 80):
        policy = Policy.from_dict(space.policy_data(params, name="sampled"))
        flat = flatten_policy(policy, params)
        for modality in ("vision", "text"):
            value = getattr(policy.config.balance, modality)
            if balance_param(modality) in params:
                assert value == params[balance_param(modality)]
                seen_used += 1
            else:
                assert value == 1.0
                seen_unused += 1
            assert flat[balance_param(modality)] == value
        assert policy.config.balance.cross == 1.0
    assert seen_used and seen_unused


def test_a_fixed_balance_is_no_parameter_and_reaches_the_policy(tmp_path):
    """Fixed balances work as before: nothing is asked, the policy holds the fixed multipliers, the
    sampled range is divided by the fixed value, and the hash of a space without a balance range is what
    it was before searched balances existed (a resumed study of vlm_default still matches its space)."""
    space = load_space(_write_space(tmp_path, {"vision": 0.5, "text": 2.0}))
    assert space.model.searched_balances() == []
    for params in _sample(space, 40):
        assert not any(name.startswith("balance.") for name in params)
        policy = Policy.from_dict(space.policy_data(params))
        assert (policy.config.balance.vision, policy.config.balance.text, policy.config.balance.cross) == (0.5, 2.0, 1.0)
    assert space.sampling_ranges("pixel_translate").magnitude == pytest.approx((0.2, 1.0))  # [0.1/0.5, min(0.6/0.5, 1)]
    assert space.sampling_ranges("text_token_dropout").magnitude == pytest.approx((0.0, 0.25))
    # a range of one number is a fixed balance
    same = load_space(_write_space(tmp_path, {"vision": [0.5, 0.5], "text": 2.0}, "same.yaml"))
    assert same.model.searched_balances() == []
    assert same.policy_data({})["balance"]["vision"] == 0.5
    # vlm_default's hash as of the commit before this change (fixed balances validate to the same content)
    assert load_space("vlm_default").hash == "53c331233cf1978779d32479369ed1774c687e6af06ea25166c5bcfd183c16bb"


def test_the_screen_points_of_the_balanced_space_run_at_neutral_balance():
    """The screen (`autoaug.search.screen`) writes params by hand, without balance: the op alone runs at
    balance 1 and inside its declared range."""
    from autoaug.search.screen import op_of, screen_points

    space = load_space("vlm_balanced")
    for key, params in screen_points(space).items():
        op = op_of(key)
        policy = Policy.from_dict(space.policy_data(params))
        (entry,) = policy.config.entries
        multiplier = getattr(policy.config.balance, entry.modality)
        assert multiplier == 1.0
        low, high = space.model.ops[op].magnitude
        assert low - 1e-9 <= entry.magnitude * multiplier <= high + 1e-9


# ====================================================================== reliance probes
VOCAB = TextVocabulary(vocab_size=16, pad_id=0, mask_id=3, special_ids=(0, 1, 2, 3))
CLS, SEP = 1, 2


class _OneModalityModel(nn.Module):
    """A two-class model that reads one modality only: ``image`` (class 1 when the mean pixel is above
    0.5) or ``text`` (class 1 when the first word is token 9). `to_token_stage`/`predict` as the
    evaluation calls them."""

    def __init__(self, reads: str) -> None:
        super().__init__()
        self.reads = reads

    def to_token_stage(self, batch: MultimodalBatch) -> MultimodalBatch:
        return batch

    def predict(self, batch: MultimodalBatch):
        if self.reads == "image":
            positive = batch.images.float().mean((1, 2, 3)) > 0.5
        else:
            positive = batch.text_ids[:, 1] == 9
        logits = torch.stack((~positive, positive), 1).float()

        class Output:
            pass

        output = Output()
        output.logits = logits
        return output


def _batches(labels: list[int], batch_size: int = 3) -> list[MultimodalBatch]:
    """Pixel-stage batches whose image (bright 0.9 / dark 0.1) and first word (9 / 10) both give the
    label; words 11 and 12 follow, then [SEP] and padding."""
    out = []
    for start in range(0, len(labels), batch_size):
        part = torch.tensor(labels[start:start + batch_size])
        n = len(part)
        images = torch.where(part.view(-1, 1, 1, 1).bool(), 0.9, 0.1).expand(n, 3, 8, 8).clone()
        ids = torch.tensor([[CLS, 0, 11, 12, SEP, 0]] * n)
        ids[:, 1] = torch.where(part.bool(), 9, 10)
        mask = ids != 0
        mask[:, 1] = True
        out.append(MultimodalBatch(text_ids=ids, text_mask=mask, text_special=~mask | (ids == CLS) | (ids == SEP),
                                   labels=MultimodalBatch.soft_labels(part, 2), images=images, vocab=VOCAB))
    return out


LABELS = [1, 1, 1, 0, 1, 1, 0, 1]  # 6 of 8 positive: a constant prediction scores 0.75 or 0.25


@pytest.mark.parametrize("reads", ["image", "text"])
def test_blanking_the_modality_a_model_ignores_leaves_its_accuracy_and_blanking_the_other_removes_it(reads):
    """A model that reads only the image keeps its clean accuracy with the text blanked, and with the
    image grey it predicts one class for all (grey 128/255 is above 0.5: class 1, 6 of 8 right);
    the reverse for a model that reads only the text (every word masked: never token 9, class 0, 2 of 8).
    Catches: blanking the wrong modality, a blank that leaves content (text not masked, image not
    constant), and an image blank other than the question-only grey (black would score 0.25)."""
    from autoaug.trainers import evaluation

    model = _OneModalityModel(reads)
    loader = _batches(LABELS)
    assert evaluation.accuracy(model, loader) == 1.0
    reliance = evaluation.modality_reliance(model, loader)
    assert set(reliance) == {"image_blanked", "text_blanked"}
    if reads == "image":
        assert reliance == {"text_blanked": 1.0, "image_blanked": 0.75}
    else:
        assert reliance == {"image_blanked": 1.0, "text_blanked": 0.25}


def test_the_text_blank_masks_every_word_and_keeps_special_tokens_padding_and_length():
    from autoaug.trainers.evaluation import MODALITY_BLANKS
    from autoaug.trainers.prepared import QUESTION_ONLY_GREY

    (batch,) = _batches([1, 0, 1])
    blanked = MODALITY_BLANKS["text_blanked"].apply(batch, torch.Generator())
    assert blanked.text_ids.tolist() == [[CLS, 3, 3, 3, SEP, 0]] * 3
    assert torch.equal(blanked.text_mask, batch.text_mask) and torch.equal(blanked.images, batch.images)
    grey = MODALITY_BLANKS["image_blanked"].apply(batch, torch.Generator())
    assert torch.all(grey.images == QUESTION_ONLY_GREY / 255.0) and torch.equal(grey.text_ids, batch.text_ids)
    uint8 = batch.replace(images=(batch.images * 255).to(torch.uint8))
    assert torch.all(MODALITY_BLANKS["image_blanked"].apply(uint8, torch.Generator()).images == QUESTION_ONLY_GREY)


def _tiny_task():
    from autoaug.trainers.prepared import PreparedTask
    from autoaug.trainers.shapes_vqa import make_shapes_vqa

    return PreparedTask.build(make_shapes_vqa(seed=0, train_size=32, val_size=24, test_size=8))


def test_a_trials_final_report_holds_the_reliance_of_the_finished_model(monkeypatch):
    """End to end without Ray: the real `TuneReporter` in a real (tiny, 2-epoch) training run, Tune's
    report captured. The reliance metrics are in the last report and its last epoch only, and equal the
    blanked accuracies of the finished model on the validation split. Catches: metrics computed on
    another split (train has 32 examples, val 24) or on another model, reported every epoch, or
    reported when not asked."""
    import lightning as L
    from ray import tune

    from autoaug.search.trainable import HISTORY_KEY, TrialSettings, TuneReporter
    from autoaug.trainers import evaluation
    from autoaug.trainers.train import run_training

    reports = []
    monkeypatch.setattr(tune, "report", lambda report, **_: reports.append(report))

    class KeepModel(L.Callback):
        def on_train_end(self, trainer, pl_module) -> None:
            self.model = pl_module.model

    task = _tiny_task()
    settings = TrialSettings(search_space=None, seed=0, max_epochs=2, report_epochs=(1,))
    kept = KeepModel()
    run_training(prepared=task, policy="moderate", seed=1, max_epochs=2, accelerator="cpu", evaluate=False,
                 callbacks=[TuneReporter(settings, report_reliance=True), kept])
    first, last = reports
    assert not set(FINAL_METRICS) & set(first)
    assert set(FINAL_METRICS) <= set(last) and set(FINAL_METRICS) <= set(last[HISTORY_KEY][-1])
    expected = evaluation.modality_reliance(kept.model, task.batches("val", 32))
    assert last[IMAGE_BLANKED_METRIC] == pytest.approx(expected["image_blanked"], abs=1e-12)
    assert last[TEXT_BLANKED_METRIC] == pytest.approx(expected["text_blanked"], abs=1e-12)
    assert all(0.0 <= last[name] <= 1.0 for name in FINAL_METRICS)

    reports.clear()
    run_training(prepared=task, policy="none", seed=1, max_epochs=1, accelerator="cpu", evaluate=False,
                 callbacks=[TuneReporter(settings)])
    assert not set(FINAL_METRICS) & set(reports[-1])


def test_searched_and_baseline_trials_report_reliance_and_calibration_or_confirmation_runs_do_not(monkeypatch):
    """`proxy_trial` routes: a baseline trial and a searched trial get the probes, a `RunSpec` run
    (calibration, confirmation) does not (its cost is spent where a decision needs it)."""
    from ray import tune

    from autoaug.search.trainable import BASELINE_KEY, RunSpec, TrialSettings, proxy_trial

    reports = []
    monkeypatch.setattr(tune, "report", lambda report, **_: reports.append(report))
    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)
    space = load_space("vlm_balanced")
    settings = TrialSettings(search_space=space, seed=0, max_epochs=1, report_epochs=())
    task = _tiny_task()
    searched = next(_sample(space, 1))
    for config, expected in (({BASELINE_KEY: "none"}, True), (searched, True),
                             (RunSpec(role="calibration", label="cal", epochs=1).as_config(), False)):
        proxy_trial(config, settings, task)
        assert (set(FINAL_METRICS) <= set(reports[-1])) is expected, config


def test_reliance_reaches_mlflow_at_the_last_epochs_step_and_the_optuna_record():
    """`MlflowRecorder` logs the final metrics with the epoch they were measured at;
    `modality_reliance_of` (what the Optuna trial records) takes them from a result, and nothing from a
    result without them (a trial stopped early)."""
    from autoaug.search.records import MlflowRecorder, modality_reliance_of

    class Client:
        def __init__(self) -> None:
            self.metrics = []

        def log_batch(self, run_id, metrics=(), **_):
            self.metrics += list(metrics)

    class Trial:
        trial_id = "t1"
        config = {}

    client = Client()
    recorder = MlflowRecorder(client, "1", "parent", "study", label_of=str, policy_of=lambda config: None, max_epochs=2)
    recorder.run_ids["t1"] = "run"
    final = {"epoch": 2, "val_accuracy": 0.6, IMAGE_BLANKED_METRIC: 0.4, TEXT_BLANKED_METRIC: 0.55}
    result = {**final, "history": [{"epoch": 1, "val_accuracy": 0.5}, final]}
    recorder.on_trial_result(0, [], Trial(), result)
    logged = {(metric.key, metric.step): metric.value for metric in client.metrics}
    assert logged[(IMAGE_BLANKED_METRIC, 2)] == 0.4 and logged[(TEXT_BLANKED_METRIC, 2)] == 0.55
    assert not any(key in FINAL_METRICS and step == 1 for key, step in logged)
    assert modality_reliance_of(result) == {IMAGE_BLANKED_METRIC: 0.4, TEXT_BLANKED_METRIC: 0.55}
    assert modality_reliance_of({"epoch": 1, "val_accuracy": 0.5}) == {} and modality_reliance_of(None) == {}
