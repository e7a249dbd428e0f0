"""End-to-end CLI: the real `lookalike` command on a real folder of product photos."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import typer.main
from PIL import Image


def run(*args, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "lookalike.cli", *args], capture_output=True, text=True, timeout=300
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def indexed(tmp_path, product_photos):
    db = tmp_path / "cli.db"
    out = run("index", str(product_photos), "--db", str(db), "--model", "pixels")
    assert "indexed 40/40 products" in out.stdout
    return db


def test_search_json_document(indexed, product_photos):
    query = next(product_photos.rglob("sku007.*"))
    doc = json.loads(run("search", str(query), "--db", str(indexed), "-k", "3", "--json").stdout)
    assert doc["query"] == str(query) and doc["model"] == "pixels"
    assert len(doc["results"]) == 3
    assert set(doc["results"][0]) == {"product_id", "score", "image_id", "title", "category"}
    assert doc["results"][0]["product_id"] == "sku007"


def test_search_filter_similar_delete_stats(indexed, product_photos):
    query = next(product_photos.rglob("sku000.*"))
    doc = json.loads(
        run("search", str(query), "--db", str(indexed), "--filter", "category=Bag", "--json").stdout
    )
    assert doc["results"] and {r["category"] for r in doc["results"]} == {"Bag"}
    sim = json.loads(run("similar", "sku000", "--db", str(indexed), "-k", "2", "--json").stdout)
    assert len(sim["results"]) == 2 and sim["query"] == "sku000"
    run("delete", "sku000", "--db", str(indexed))
    stats = json.loads(run("stats", "--db", str(indexed), "--json").stdout)
    assert stats["products"] == 39 and stats["models"] == {"pixels": 39}


def test_check_index_reports_recall_against_exact_search(indexed):
    doc = json.loads(run("check-index", "--db", str(indexed), "--samples", "10", "-k", "3", "--json").stdout)
    # 40 products: the catalog searches exactly, so the check must find every true neighbour
    assert doc["index"] == "exact" and doc["vectors"] == 40 and doc["samples"] == 10
    assert doc["recall@3"] == 1.0
    out = run("check-index", "--db", str(indexed), "--samples", "5").stdout
    assert "exact index over 40 vectors of pixels: recall@10 1.000" in " ".join(out.split())
    bad = run("check-index", "--db", str(indexed), "--samples", "0", check=False)
    assert bad.returncode != 0 and "samples" in bad.stderr


def test_errors_are_one_line_without_traceback(indexed, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    proc = run("search", str(bad), "--db", str(indexed), check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "bad.png" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run("similar", "nope", "--db", str(indexed), check=False)
    assert proc.returncode == 1 and "product 'nope' not found" in proc.stderr
    proc = run("search", str(bad), "--db", str(indexed), "--filter", "oops", check=False)
    assert proc.returncode == 1
    proc = run("--debug", "similar", "nope", "--db", str(indexed), check=False)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_every_command_has_help():
    from lookalike.cli import app

    def walk(cmd, path=()):
        yield path, cmd
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                yield from walk(sub, (*path, name))

    root = typer.main.get_command(app)
    missing = [" ".join(p) for p, c in walk(root) if p and not (c.help or c.short_help)]
    assert not missing, f"commands without help text: {missing}"
    names = {p[0] for p, _ in walk(root) if p}
    assert {"index", "search", "similar", "delete", "stats"} <= names


def one_line_error(proc, *needles: str) -> str:
    """The command failed with one `error: ...` line on stderr (no traceback) holding ``needles``."""
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert "Traceback" not in err and err.count("\n") == 0 and err.startswith("error: "), err
    for needle in needles:
        assert needle in err, err
    return err


def test_bad_limits_are_refused_before_any_work(tmp_path, product_photos):
    db = tmp_path / "c.db"
    for args in (
        ("index", str(product_photos), "--db", str(db), "--limit", "-3"),
        ("index", str(product_photos), "--db", str(db), "--limit", "0"),
        ("train", "vae", "--limit", "-3", "--out", str(tmp_path / "vae")),
        ("train", "metric", "--limit", "-3", "--run-dir", str(tmp_path / "metric")),
    ):
        proc = run(*args, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and "--limit" in proc.stderr, args
    assert not db.exists() and not (tmp_path / "vae").exists()


def test_unwritable_outputs_fail_first_with_one_line_naming_the_path(tmp_path, product_photos):
    db = tmp_path / "c.db"
    a_file = tmp_path / "a-file.jpg"
    a_file.write_bytes(b"x")
    folder = tmp_path / "existing"
    folder.mkdir()
    index = ("index", str(product_photos), "--db", str(db), "--model", "pixels")
    one_line_error(run(*index, "--report", str(folder), check=False), f"--report {folder}", "is a folder")
    one_line_error(run(*index, "--report", "/proc/x.json", check=False), "/proc/x.json", "No such file")
    assert not db.exists()  # refused before indexing, not after it
    for args, needles in (
        (("eval", "-m", "pixels", "--out", "/proc/ev"), ("--out /proc/ev", "cannot create")),
        (("train", "vae", "--out", "/proc/vv"), ("--out /proc/vv", "cannot create")),
        (("train", "metric", "--run-dir", str(a_file)), (f"--run-dir {a_file}", "is a file")),
        (("train", "verifier", "--run-dir", str(a_file)), (f"--run-dir {a_file}", "is a file")),
        (("explore", "map", "--db", str(db), "--out", "/proc/zz"), ("--out /proc/zz",)),
        (("explore", "clusters", "--db", str(db), "--out", str(a_file)), (f"--out {a_file}", "is a file")),
        (("explore", "impute", "category", "--db", str(db), "--out", str(folder)), ("is a folder",)),
    ):
        one_line_error(run(*args, check=False), *needles)
    env_run = subprocess.run(
        [sys.executable, "-m", "lookalike.cli", "stats"],
        capture_output=True,
        text=True,
        env={**os.environ, "LOOKALIKE_DATA_DIR": "/proc/nope", "LOOKALIKE_DB": ""},
    )
    one_line_error(env_run, "/proc/nope", "LOOKALIKE_DATA_DIR")


def test_an_os_error_during_a_command_is_one_line_naming_the_path(indexed, tmp_path):
    out = tmp_path / "maps"
    (out / "map-tsne.png").mkdir(parents=True)  # the picture cannot be written: a folder is in the way
    proc = run("explore", "map", "--limit", "10", "--db", str(indexed), "--out", str(out), check=False)
    one_line_error(proc, f"{out / 'map-tsne.png'}: Is a directory")
    proc = run(
        "--debug", "explore", "map", "--limit", "10", "--db", str(indexed), "--out", str(out), check=False
    )
    assert proc.returncode != 0 and "IsADirectoryError" in proc.stderr


def test_index_refuses_an_empty_folder_and_names_what_it_skipped(tmp_path, product_photos):
    import shutil

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no photos here")
    proc = run("index", str(empty), "--db", str(tmp_path / "e.db"), "--model", "pixels", check=False)
    assert proc.returncode == 1 and "has no products" in proc.stderr
    assert "skipped 1 file(s)" in " ".join(proc.stderr.split())
    shop = tmp_path / "shop"
    for folder in ("Bag", "Shoe"):
        (shop / folder).mkdir(parents=True)
    shutil.copy(next(product_photos.rglob("*.jpg")), shop / "Bag" / "item.jpg")
    shutil.copy(next(product_photos.rglob("*.png")), shop / "Shoe" / "item.png")
    shutil.copy(next(product_photos.rglob("*.jpg")), shop / "Bag" / "other.jfif")
    for name in ("a.heic", "b.heic", "list.txt"):
        (shop / name).write_bytes(b"x")
    proc = run("index", str(shop), "--db", str(tmp_path / "s.db"), "--model", "pixels")
    out, err = " ".join(proc.stdout.split()), " ".join(proc.stderr.split())
    assert "indexed 1/2 products" in out and "1 product(s) skipped" in out
    assert "skipped 3 file(s) that are not images in a supported format (.heic 2, .txt 1)" in err
    assert "Bag/item.jpg (Bag), Shoe/item.png (Shoe)" in err


def test_index_async_takes_the_batch_size_and_refuses_report(tmp_path, product_photos):
    db = tmp_path / "j.db"
    proc = run("index", str(product_photos), "--db", str(db), "--async", "--report", "r.json", check=False)
    one_line_error(proc, "--report does not go with --async", "lookalike job")
    out = run(
        "index", str(product_photos), "--db", str(db), "--model", "pixels", "--async", "--batch-size", "7"
    )
    assert "ran in this process" in out.stdout  # no LOOKALIKE_REDIS_URL: no workers to hand it to
    job_id = out.stdout.split()[2]
    job = json.loads(run("job", job_id, "--db", str(db), "--json").stdout)
    assert job["batches"]["total"] == 6  # 40 products, 7 a batch


def test_files_that_are_not_checkpoints_get_a_short_reason(indexed, product_photos, tmp_path):
    import torch

    photo = next(product_photos.rglob("*.jpg"))
    table = tmp_path / "catalog.csv"
    table.write_text("product_id,image\n")
    pickled = tmp_path / "module.pt"
    torch.save({"net": torch.nn.Linear(2, 2)}, pickled)
    for args, reason in (
        (("--model", f"trained:{photo}"), "not a PyTorch file: a JPEG image"),
        (("--model", f"vae:{table}"), "not a PyTorch file"),
        (("--model", f"trained:{pickled}"), "holds Python objects (torch.nn.modules.linear.Linear)"),
        (("--rerank", "3", "--verifier", str(photo)), "not a PyTorch file"),
    ):
        proc = run("search", str(photo), "--db", str(indexed), *args, check=False)
        err = one_line_error(proc, "is not a lookalike checkpoint", reason)
        assert "weights_only" not in err


def test_search_options(indexed, product_photos):
    photo = str(next(product_photos.rglob("*.jpg")))
    proc = run("search", photo, "--db", str(indexed), "--verifier", "none", check=False)
    one_line_error(proc, "--verifier", "--rerank")
    help_text = subprocess.run(
        [sys.executable, "-m", "lookalike", "search", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "250"},
    ).stdout
    assert "[default: the LOOKALIKE_VERIFIER setting, else 'default']" in help_text


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_setting_error_points_at_the_setting(indexed, product_photos):
    photo = str(next(product_photos.rglob("*.jpg")))
    proc = subprocess.run(
        [sys.executable, "-m", "lookalike.cli", "search", photo, "--db", str(indexed), "--model", "default"],
        capture_output=True,
        text=True,
        env={**os.environ, "LOOKALIKE_DEVICE": "cuda"},
    )
    err = one_line_error(proc, "set LOOKALIKE_DEVICE=cpu or auto")
    assert "--device" not in err


def test_serve_checks_its_settings_before_saying_it_serves(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "lookalike.cli", "serve", "--db", str(tmp_path / "s.db"), "--port", "8765"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LOOKALIKE_VERIFIER": str(tmp_path / "missing.pt")},
    )
    one_line_error(proc, "LOOKALIKE_VERIFIER")
    assert "serving" not in proc.stdout


def test_eval_says_when_it_has_fewer_queries_than_asked(tmp_path):
    proc = run(
        "eval",
        "-m",
        "pixels",
        "--protocol",
        "class-level",
        "--queries",
        "20000",
        "--distractors",
        "20",
        "--out",
        str(tmp_path / "ev"),
    )
    assert "--queries 20000: this protocol has 10000 queries; using all of them" in " ".join(
        proc.stdout.split()
    )


def test_a_mistyped_db_is_an_error_and_creates_nothing(indexed, product_photos, tmp_path):
    typo = tmp_path / "typo" / "cli.db"
    photo = str(next(product_photos.rglob("*.png")))
    for args in (
        ("search", photo),
        ("similar", "sku001"),
        ("stats",),
        ("products",),
        ("delete", "sku001"),
        ("duplicates",),
    ):
        one_line_error(run(*args, "--db", str(typo), check=False), "no catalog at", str(typo))
    assert not typo.exists() and not typo.parent.exists()
    assert "40 products" in run("stats", "--db", str(indexed)).stdout


def test_reindexing_with_replace_images_swaps_a_changed_photo(indexed, product_photos):
    from PIL import Image

    photo = next(product_photos.rglob("sku001.*"))
    Image.open(next(product_photos.rglob("sku002.*"))).save(photo)  # the shop replaced sku001's photo
    run("index", str(product_photos), "--db", str(indexed), "--model", "pixels")
    listed = json.loads(run("products", "--db", str(indexed), "--json").stdout)
    images = {p["product_id"]: len(p["image_ids"]) for p in listed["products"]}
    assert images["sku001"] == 2  # by default indexing adds
    replaced = run(
        "index", str(product_photos), "--db", str(indexed), "--model", "pixels", "--replace-images"
    )
    assert "1 image(s) no longer listed removed" in " ".join(replaced.stdout.split())
    listed = json.loads(run("products", "--db", str(indexed), "--json").stdout)
    assert {p["product_id"]: len(p["image_ids"]) for p in listed["products"]}["sku001"] == 1


def test_a_reranked_search_table_shows_alignment_and_verifier(tmp_path, fmnist_test):
    from PIL import Image

    db = tmp_path / "d.db"
    run("index", "fashion-mnist:test", "--limit", "30", "--db", str(db), "--model", "default")
    photo = tmp_path / "q.png"
    Image.fromarray(fmnist_test[0][3]).resize((90, 90)).convert("RGB").save(photo)
    out = run("search", str(photo), "--db", str(db), "--rerank", "2", "-k", "3").stdout
    header = next(line for line in out.splitlines() if "score" in line)
    assert "alignment" in header and "verifier" in header, out
    plain = run("search", str(photo), "--db", str(db), "-k", "3").stdout
    assert "verifier" not in plain and "alignment" not in plain


def test_version_short_help_and_unfolded_output_in_a_pipe(indexed, product_photos):
    assert run("--version").stdout.startswith("lookalike ")
    assert "search [OPTIONS]" in run("search", "-h").stdout
    out = run("index", str(product_photos), "--db", str(indexed), "--model", "pixels").stdout
    # not a terminal: the summary is one line, not folded at 80 columns
    assert any(
        line.startswith("indexed 40/40") and line.endswith("0 product(s) skipped")
        for line in out.splitlines()
    )


def test_choices_and_ranges_are_usage_errors_before_any_work(tmp_path):
    for args, option in [
        (("train", "vae", "--likelihood", "bogus", "--out", str(tmp_path / "v")), "--likelihood"),
        (("train", "metric", "--lr", "-1", "--out", str(tmp_path / "m.pt")), "--lr"),
        (("train", "metric", "--offline-pool", "-3", "--out", str(tmp_path / "m.pt")), "--offline-pool"),
        (("worker", "-c", "0"), "--concurrency"),
    ]:
        proc = run(*args, check=False)
        assert proc.returncode == 2 and option in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_a_folder_as_db_and_a_busy_port_are_named(tmp_path):
    import socket

    proc = run("products", "--db", str(tmp_path), check=False)
    assert proc.returncode == 1 and f"{tmp_path} is a folder, not a catalog file" in proc.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run("serve", "--db", str(tmp_path / "c.db"), "--port", str(port), check=False)
    assert proc.returncode == 1 and f"cannot listen on 127.0.0.1:{port}: the port is in use" in proc.stderr
    assert "serving on" not in proc.stdout


def test_ctrl_c_while_indexing_keeps_the_finished_batches_and_says_so(tmp_path):
    import signal
    import sqlite3
    import time

    db = tmp_path / "int.db"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lookalike.cli",
            "index",
            "fashion-mnist:train",
            "--limit",
            "30000",
            "--db",
            str(db),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a background job (make test &) ignores SIGINT, and a child inherits that: Ctrl-C as in a terminal
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    stored = 0
    while stored == 0 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.3)
        if db.exists():
            try:
                with sqlite3.connect(db) as conn:
                    stored = conn.execute("SELECT count(*) FROM products").fetchone()[0]
            except sqlite3.OperationalError:  # the schema is being created
                pass
    assert stored > 0 and proc.poll() is None, "the first batch was not stored in time"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "run the same command again" in err and "Traceback" not in err
    with sqlite3.connect(db) as conn:
        now = conn.execute("SELECT count(*) FROM products").fetchone()[0]
    assert 0 < now < 30000 and f"interrupted: {now:,} products of this run are stored" in err


def test_ctrl_c_in_training_saves_the_finished_steps_and_the_same_command_goes_on(tmp_path):
    import re
    import signal
    import time

    import torch

    args = [
        "train", "metric", "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "m.pt"),
        "--steps", "300", "--limit", "600", "--identities", "16", "--no-localize", "--val-every", "1000",
    ]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "lookalike.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal
    )
    assert proc.stdout.readline().startswith("training")
    assert proc.stdout.readline().startswith("step 0")  # the untrained start is measured: steps follow
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    found = re.search(r"interrupted: stopped after step (\d+)/300; the run is saved in (\S+state\.pt)", err)
    assert found, err
    saved = torch.load(found.group(2), weights_only=False)
    assert saved["step"] == int(found.group(1)) > 0  # every finished step, not the last checkpoint
    done = run(*args)
    assert "resum" in (done.stdout + done.stderr).lower() and (tmp_path / "m.pt").is_file()


def test_a_failed_command_leaves_no_empty_output_folder(tmp_path):
    proc = run("eval", "-m", "nosuch", "--out", str(tmp_path / "ev" / "deep"), check=False)
    assert proc.returncode == 1 and "unknown model 'nosuch'" in proc.stderr
    proc = run(
        "train", "metric", "--run-dir", str(tmp_path / "run"), "--init", str(tmp_path / "no.pt"), check=False
    )
    assert proc.returncode == 1 and "no.pt not found" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_an_image_can_come_from_standard_input(indexed, product_photos):
    photo = next(product_photos.rglob("*.png"))
    by_path = json.loads(run("search", str(photo), "--db", str(indexed), "--json").stdout)
    piped = subprocess.run(
        [sys.executable, "-m", "lookalike.cli", "search", "-", "--db", str(indexed), "--json"],
        input=photo.read_bytes(),
        capture_output=True,
        timeout=120,
    )
    assert piped.returncode == 0, piped.stderr
    doc = json.loads(piped.stdout)
    assert doc["query"] == "<stdin>" and doc["results"] == by_path["results"]
    copies = subprocess.run(
        [sys.executable, "-m", "lookalike.cli", "copies", "-", "--db", str(indexed), "--json"],
        input=photo.read_bytes(),
        capture_output=True,
        timeout=120,
    )
    assert json.loads(copies.stdout)["copies"][0]["product_ids"] == [photo.stem]
    empty = subprocess.run(
        [sys.executable, "-m", "lookalike.cli", "search", "-", "--db", str(indexed)],
        input=b"",
        capture_output=True,
        timeout=120,
    )
    assert empty.returncode == 1 and b"no image on standard input" in empty.stderr


def test_strict_index_exits_2_when_an_item_was_skipped(tmp_path, product_photos):
    (product_photos / "Bag" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a whole jpeg")
    db, report = tmp_path / "s.db", tmp_path / "r.json"
    plain = run("index", str(product_photos), "--db", str(db), "--model", "pixels", "--report", str(report))
    assert "1 bad image(s)" in plain.stdout and "broken.jpg" in plain.stderr
    assert json.loads(report.read_text())["report_path"] == str(report)  # the file names itself
    strict = run("index", str(product_photos), "--db", str(db), "--model", "pixels", "--strict", check=False)
    assert strict.returncode == 2 and "indexed 40/41 products" in strict.stdout
    assert "broken.jpg" in strict.stderr
    proc = run("index", str(product_photos), "--db", str(db), "--strict", "--async", check=False)
    assert proc.returncode == 1 and "--strict does not go with --async" in proc.stderr


def test_delete_takes_several_ids_and_deletes_none_if_one_is_unknown(indexed, tmp_path):
    proc = run("delete", "sku001", "nope", "--db", str(indexed), check=False)
    assert proc.returncode == 1 and "product 'nope' not found" in proc.stderr
    assert json.loads(run("stats", "--db", str(indexed), "--json").stdout)["products"] == 40  # untouched
    out = run("delete", "sku001", "sku002", "sku001", "--db", str(indexed), "--json").stdout
    assert json.loads(out) == {"deleted": ["sku001", "sku002"]}
    assert json.loads(run("stats", "--db", str(indexed), "--json").stdout)["products"] == 38
    proc = run("explore", "clusters", "import", str(tmp_path), "--db", str(indexed), check=False)
    assert proc.returncode == 1 and "is a folder, not the annotated clusters CSV" in proc.stderr
    proc = run("db", "start", "--pgdata", str(indexed), check=False)
    assert proc.returncode == 1 and "is a file, not a folder for the server's data" in proc.stderr


def test_more_identities_per_batch_than_products_is_refused(tmp_path):
    proc = run(
        "train", "metric", "--identities", "500", "--limit", "200", "--no-localize",
        "--run-dir", str(tmp_path / "run"), check=False,
    )  # fmt: skip
    assert (
        proc.returncode == 1
        and "identities per batch (500, --identities) is more than the 200" in proc.stderr
    )
    assert not (tmp_path / "run").exists()


def test_images_a_second_model_never_embedded_are_named(tmp_path):
    """A catalog indexed again with its own model only: the other model's vectors lag behind, and
    `stats` and `search -m` say so instead of silently missing those products."""
    db = str(tmp_path / "c.db")
    run("index", "fashion-mnist:test", "--limit", "20", "--db", db, "-m", "pixels")
    run("index", "fashion-mnist:test", "--limit", "20", "--db", db, "-m", "default")
    run("index", "fashion-mnist:test", "--limit", "25", "--db", db)  # the catalog's model: pixels
    stats = run("stats", "--db", db).stdout
    assert (
        "model default: 20 vectors (5 images without one" in stats and "model pixels: 25 vectors\n" in stats
    )
    photo = tmp_path / "p.png"
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8) + 90).save(photo)
    found = run("search", str(photo), "--db", db, "-m", "default", "--json")
    assert "note: model 'default' has no vectors for 5 of 25 images" in " ".join(found.stderr.split())
    assert json.loads(found.stdout)["model"] == "default"
    plain = run("search", str(photo), "--db", db, "--json")
    assert "note:" not in plain.stderr


def test_a_filter_no_product_matches_is_named(tmp_path):
    db = str(tmp_path / "c.db")
    run("index", "fashion-mnist:test", "--limit", "20", "--db", db, "-m", "pixels")
    photo = tmp_path / "p.png"
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8) + 90).save(photo)
    wrong_case = run("search", str(photo), "--db", db, "-f", "category=bag", "--json")
    assert json.loads(wrong_case.stdout)["results"] == []
    note = " ".join(wrong_case.stderr.split())
    assert "note: no product has category 'bag' (categories: Ankle boot, Bag," in note
    unknown = run("similar", "fmnist-test-0", "--db", db, "-f", "Brand=Acme")
    assert "note: no product has Brand='Acme'; filters are exact" in " ".join(unknown.stderr.split())
    fine = run("search", str(photo), "--db", db, "-f", "category=Bag")
    assert "note:" not in fine.stderr
