"""assignments/lab0: plot.py draws each panel from its own columns of the validation rows (and no other row),
stops with a one-line error naming the folder and the column when a folder, a validation row or a column is
missing or a run is passed in the wrong place; the handout's commands use flags the scripts have."""
import csv
import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAB = os.path.join(ROOT, "assignments", "lab0")
_spec = importlib.util.spec_from_file_location("lab0_plot", os.path.join(LAB, "plot.py"))
plot = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(plot)

STEPS = [10, 20, 30]
# Every column its own values, so a panel drawing the wrong column (or the test row) is seen.
VALID = {
    "vae": {"kl": [0.5, 0.2, 0.05], "au": [3, 1, 0]},
    "dual": {"kl": [1.0, 2.0, 3.0], "kl_exact": [50.0, 40.0, 30.0], "kl_lower": [49.0, 39.0, 29.0]},
    "ac": {"kl": [10.0, 8.0, 6.0], "kl_ac": [10.0, 8.0, 6.0], "kl_gauss": [9.9, 7.9, 5.9],
           "kl_resid": [0.1, 0.1, 0.1], "kl_exact": [10.05, 8.05, 6.05]},
}
# What each panel draws, written out here (not read from plot.RUNS, so a column dropped there is caught).
NEEDS = {"vae": ["kl", "au"], "dual": ["kl", "kl_exact", "kl_lower"],
         "ac": ["kl_ac", "kl_gauss", "kl_resid", "kl_exact"]}
TEST_ROW_VALUE = 999.0                   # the final test row: never drawn


def write_run(folder, run: str, drop: str = None, blank: str = None, valid: bool = True, latent: int = None):
    """A tiny log.csv as the scripts write it: three validation rows and the final test row (whose extra
    columns the valid rows leave empty); `drop` leaves a column out, `blank` empties it in the valid rows."""
    os.makedirs(folder, exist_ok=True)
    cols = {k: v for k, v in VALID[run].items() if k != drop}
    fields = ["step", "epoch", "split", "rec"] + list(cols) + ["test_seconds"]
    with open(os.path.join(folder, "log.csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields, restval="")
        w.writeheader()
        for i, step in enumerate(STEPS):
            if valid:
                w.writerow({"step": step, "epoch": step / 100, "split": "valid", "rec": 150.0 - i,
                            **{k: ("" if k == blank else v[i]) for k, v in cols.items()}})
        w.writerow({"step": STEPS[-1], "split": "test", "rec": 140.0, "test_seconds": 1.0,
                    **{k: TEST_ROW_VALUE for k in cols}})
    if latent:
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump({"latent": latent}, f)
    return str(folder)


def three_runs(tmp_path, **changes):
    """The three folders; changes = {run: dict of write_run's keyword arguments} for one of them."""
    return [write_run(tmp_path / run, run, **changes.get(run, {})) for run in plot.RUNS]


def lines_by_panel(fig) -> dict:
    """{(panel letter, line label): y values}; the AU axis (a twin of panel a, no title) counts as a."""
    out = {}
    for ax in fig.axes:
        title = ax.get_title()
        panel = title[1] if title.startswith("(") else "a"
        for line in ax.get_lines():
            out[(panel, line.get_label())] = [float(y) for y in line.get_ydata()]
            assert [float(x) for x in line.get_xdata()] == STEPS, (panel, line.get_label())
    return out


def test_each_panel_draws_its_columns_from_the_validation_rows_only(tmp_path):
    vae, dual, ac = three_runs(tmp_path, vae={"latent": 4})
    out = tmp_path / "lab0.png"
    fig = plot.main([vae, dual, ac, "-o", str(out)])
    assert open(out, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    got = lines_by_panel(fig)
    want = {
        ("a", "KL(q(z|x) || p), closed form"): VALID["vae"]["kl"],
        ("a", "active units (AU)"): VALID["vae"]["au"],
        ("b", "exact KL (kl_exact)"): VALID["dual"]["kl_exact"],
        ("b", "lower bound (kl_lower)"): VALID["dual"]["kl_lower"],
        ("b", "critic's KL, the paper's (kl)"): VALID["dual"]["kl"],
        ("c", "exact KL (kl_exact)"): VALID["ac"]["kl_exact"],
        ("c", "adaptive contrast (kl_ac)"): VALID["ac"]["kl_ac"],
        ("c", "its Gaussian term (kl_gauss)"): VALID["ac"]["kl_gauss"],
        ("c", "its residual critic (kl_resid)"): VALID["ac"]["kl_resid"],
        ("c", "dual critic's KL, run (b)"): VALID["dual"]["kl"],
    }
    assert got == pytest.approx(want)
    assert all(TEST_ROW_VALUE not in ys for ys in got.values())
    twin = [ax for ax in fig.axes if ax.get_ylabel().startswith("active units")]
    assert twin and twin[0].get_ylabel() == "active units (of 4)" and twin[0].get_ylim()[1] == 4.5


def error_of(capsys, argv) -> str:
    with pytest.raises(SystemExit) as e:
        plot.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.mark.parametrize("run,column", [(run, col) for run, cols in NEEDS.items() for col in cols])
def test_a_column_a_panel_needs_is_a_one_line_error_naming_it(tmp_path, capsys, run, column):
    err = error_of(capsys, three_runs(tmp_path, **{run: {"drop": column}}) + ["-o", str(tmp_path / "x.png")])
    assert f"no column {column!r}" in err and os.path.join(str(tmp_path / run), "log.csv") in err, err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("run,column", [("vae", "au"), ("dual", "kl_exact"), ("ac", "kl_resid")])
def test_an_empty_column_is_an_error_too(tmp_path, capsys, run, column):
    err = error_of(capsys, three_runs(tmp_path, **{run: {"blank": column}}) + ["-o", str(tmp_path / "x.png")])
    assert f"column {column!r} is empty" in err, err


@pytest.mark.parametrize("run", list(plot.RUNS))
def test_a_missing_folder_names_it_and_its_command(tmp_path, capsys, run):
    folders = three_runs(tmp_path)
    folders[list(plot.RUNS).index(run)] = str(tmp_path / "nowhere")
    err = error_of(capsys, folders + ["-o", str(tmp_path / "x.png")])
    assert f"{tmp_path / 'nowhere'}: no such folder" in err and plot.RUNS[run]["command"] in err, err


def test_a_run_without_validation_rows_or_without_a_log_says_so(tmp_path, capsys):
    vae, dual, ac = three_runs(tmp_path, dual={"valid": False})
    err = error_of(capsys, [vae, dual, ac])
    assert "no validation row" in err and "--val_every" in err, err
    os.remove(os.path.join(dual, "log.csv"))
    assert "log.csv: not found" in error_of(capsys, [vae, dual, ac])


def test_runs_in_the_wrong_place_are_refused(tmp_path, capsys):
    vae, dual, ac = three_runs(tmp_path)
    assert "not the vae run" in error_of(capsys, [dual, dual, ac])
    assert "not the dual run" in error_of(capsys, [vae, ac, ac])
    assert "no column 'kl_ac'" in error_of(capsys, [vae, dual, dual])


def test_the_handouts_commands_use_flags_the_scripts_have_and_validate_within_the_run():
    commands = [line.split() for line in open(os.path.join(LAB, "README.md"), encoding="utf-8")
                if line.split()[:1] == ["python"]]
    runs = [c for c in commands if c[1] in ("vae.py", "ivae.py")]
    assert [c[c.index("--out_dir") + 1] for c in runs] == ["runs/lab0_vae", "runs/lab0_dual", "runs/lab0_ac"]
    helps = {}
    for c in runs:
        if c[1] not in helps:
            run = subprocess.run([sys.executable, c[1], "--help"], cwd=ROOT, capture_output=True, text=True,
                                 timeout=300)
            assert run.returncode == 0, run.stderr
            helps[c[1]] = set(run.stdout.replace(",", " ").replace("[", " ").replace("]", " ").split())
        assert not [w for w in c[2:] if w.startswith("--") and w not in helps[c[1]]], c
        # shorter than a PTB epoch (1,359 steps): only --val_every writes the validation rows plot.py reads
        assert 0 < int(c[c.index("--val_every") + 1]) <= int(c[c.index("--max_steps") + 1]), c
    plotting = [c for c in commands if c[1] == "assignments/lab0/plot.py"]
    assert plotting and plotting[0][2:5] == [c[c.index("--out_dir") + 1] for c in runs], plotting
