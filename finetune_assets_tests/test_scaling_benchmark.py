"""benchmarks/scaling.py's arithmetic: growth ratios between completed sizes, and the table it writes."""
import sys

from benchmarks.scaling import markdown, measure, ratios


def _figures(wall, cpu, rss, failed=False):
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mib": rss, "failed": failed}


def test_ratios_compare_consecutive_completed_sizes_stage_by_stage():
    sizes = {"2000": {"mined_negatives": _figures(100, 150, 1700), "evaluation_report": _figures(50, 80, 1500)},
             "8000": {"mined_negatives": _figures(380, 600, 2400), "evaluation_report": _figures(210, 300, 2100)},
             "32000": {"mined_negatives": _figures(900, 1000, 3000, failed=True)}}
    found = ratios(sizes)
    assert list(found) == ["8000/2000"]  # a size with a failed stage is left out of every ratio
    pair = found["8000/2000"]
    assert pair["sample_ratio"] == 4.0
    assert pair["mined_negatives"] == {"wall_s": 3.8, "cpu_s": 4.0, "peak_rss_mib": 1.41}
    assert pair["evaluation_report"] == {"wall_s": 4.2, "cpu_s": 3.75, "peak_rss_mib": 1.4}
    table = markdown({"sizes": sizes, "ratios": found})
    assert "| 32000 | mined_negatives (failed) | 900 | 1000 | 3000 |" in table
    assert "| 8000/2000 | mined_negatives | 3.8 | 4.0 | 1.41 |" in table


def test_measure_reports_the_commands_cpu_and_memory_and_stops_it_at_the_timeout(tmp_path):
    # A child that allocates about 200 MiB and spins: its peak RSS and CPU time are the command's.
    busy = "x = bytearray(200 * 2**20); import time; t = time.process_time()\nwhile time.process_time() - t < 0.5: pass"
    done = measure([sys.executable, "-c", busy], timeout=60, log=tmp_path / "busy.log")
    assert done["exit_code"] == 0 and not done["timed_out"]
    assert done["peak_rss_mib"] >= 200 and done["cpu_s"] >= 0.4
    stopped = measure([sys.executable, "-c", "import time; time.sleep(30)"], timeout=1, log=tmp_path / "slow.log")
    assert stopped["timed_out"] and stopped["exit_code"] != 0 and stopped["wall_s"] < 10


def test_paired_models_refuses_a_check_collection_before_loading_anything(tmp_path, capsys):
    import pytest

    from benchmarks.paired_models import main

    with pytest.raises(SystemExit) as exited:
        main(["../shared/ir-data/med", "dense", str(tmp_path), str(tmp_path), "--out", str(tmp_path / "o.json")])
    assert exited.value.code == 2
    assert "development collections" in capsys.readouterr().err and not (tmp_path / "o.json").exists()


def test_exact_top_k_benchmark_sets_search_beside_encoding(tmp_path):
    import json

    from benchmarks.exact_top_k import main

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": str(i), "text": f"paragraph {i} about heat transfer"}) + "\n"
                              for i in range(12)))
    out = tmp_path / "top-k.json"
    assert main(["--documents", "300", "--queries", "16", "--k", "5", "300", "--repeats", "2", "--corpus",
                 str(corpus), "--encoded-documents", "12", "--max-seq-length", "32", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [len(report["top_k_cpu_s"][k]) for k in ("5", "300")] == [2, 2]
    assert report["encoding_cpu_s_all_documents"] > 0
    assert abs(report["encoding_cpu_s_all_documents"] - report["encoding_cpu_s_per_document"] * 300) <= 0.1
    table = out.with_suffix(".md").read_text()
    assert "| encode 300 documents (32 tokens, rate from 12) |" in table
    assert "| exact top-300 of 16 queries |" in table
