"""python -m mmclf.predict: a finished run classifies new images as its test step did."""
import json
import shutil

import pytest

from mmclf.deploy.predict import main, predict
from tests.conftest import run_cli


def predict_cli(*args):
    return run_cli(*args, module="mmclf.predict")


def test_predicting_the_runs_own_test_images_reproduces_predictions_json(folder_run, images):
    expected = json.loads((folder_run / "predictions.json").read_text())
    results = list(predict(folder_run, [images / "test"], device="cpu", k=3, batch=7))  # batches of 7: a short last
    assert [r["path"] for r in results] == [str(images / name) for name in expected["files"]]
    assert [expected["classes"].index(r["top_k"][0]["class"]) for r in results] == expected["pred_label"]
    assert [r["top_k"][0]["score"] for r in results] == pytest.approx(expected["pred_score"], abs=1e-5)
    assert all(sum(c["score"] for c in r["top_k"]) == pytest.approx(1.0, abs=1e-4) for r in results), "3 of 3"


def test_the_cli_prints_a_json_line_per_image_with_class_names(folder_run, images, tmp_path):
    picked = tmp_path / "picked"
    picked.mkdir()
    shutil.copy(images / "test/owl/0.png", picked / "a.png")
    shutil.copy(images / "test/dog/1.jpg", picked / "b.jpg")
    (picked / ".DS_Store").write_bytes(b"\0")
    result = predict_cli(folder_run, picked, "--json", "--top-k", "2", "--device", "cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [line["path"] for line in lines] == [str(picked / "a.png"), str(picked / "b.jpg")]
    assert all(len(line["top_k"]) == 2 and line["top_k"][0]["class"] in ("cat", "dog", "owl") for line in lines)


def test_without_json_it_prints_a_table_row_per_image(folder_run, images, capsys):
    image = images / "test/owl/0.png"
    main([str(folder_run), str(image), "--device", "cpu"])  # the CLI's own main, in this process
    (row,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"{image}\t")]
    assert row.endswith("%") and row.split("\t")[1].split()[0] in ("cat", "dog", "owl"), row


@pytest.mark.parametrize("case", ["no run", "unfinished", "bad image"])
def test_bad_input_is_one_line_and_status_2(case, folder_run, images, tmp_path, capsys):
    image = images / "test/cat/0.png"
    if case == "no run":
        args = [tmp_path / "nowhere", image]
    elif case == "unfinished":
        unfinished = shutil.copytree(folder_run, tmp_path / "run", symlinks=True)
        for checkpoint in (unfinished / "work_dir").glob("*.pth"):
            checkpoint.unlink()
        args = [unfinished, image]
    else:
        broken = tmp_path / "broken.jpg"
        broken.write_bytes(b"not a jpeg")
        args = [folder_run, broken]
    with pytest.raises(SystemExit) as exited:  # the CLI's own main, in this process (the JSON test runs it as one)
        main([*map(str, args), "--device", "cpu"])
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("mmclf: error:")]
    assert exited.value.code == 2 and len(errors) == 1, stderr[-2000:]
    assert {"no run": "not an mmclf run dir", "unfinished": "its train step has not finished",
            "bad image": "broken.jpg: cannot be read as an image"}[case] in errors[0]
