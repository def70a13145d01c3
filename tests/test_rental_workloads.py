"""Workload parameters, GPU class keys, benchmark plausibility and prices: the pure rules, no AWS."""
from __future__ import annotations

import pytest

from depu.agents.catalogue import describe, price_per_hour
from depu.agents.registry import gpu_class_of
from depu.agents.verification import judge_benchmark
from depu.errors import UserError
from depu.jobs import workloads
from depu.jobs.metering import cost_of, max_cost


@pytest.mark.parametrize(("name", "memory_mb", "key"), [
    ("NVIDIA H100 80GB HBM3", 81559, "h100-80gb"),
    ("NVIDIA H100 PCIe", 81559, "h100-80gb"),
    ("NVIDIA A100-SXM4-40GB", 40960, "a100-40gb"),
    ("NVIDIA GeForce RTX 4090", 24564, "rtx4090-24gb"),
    ("Tesla T4", 15360, "t4-16gb"),
    ("NVIDIA H200", 143771, "h200-141gb"),
    ("NVIDIA RTX A6000", 49140, "rtxa6000-48gb"),
])
def test_gpu_class_keys(name, memory_mb, key):
    assert gpu_class_of(name, memory_mb) == key


def test_benchmark_plausibility():
    real = {"device": "cuda:0", "fp32_tflops": 48.0, "mem_bandwidth_gbs": 2900.0, "verified": True}
    assert judge_benchmark("NVIDIA H100 80GB HBM3", real).verified
    assert not judge_benchmark("NVIDIA H100 80GB HBM3", {**real, "fp32_tflops": 1.2}).verified  # CPU-like
    assert not judge_benchmark("NVIDIA H100 80GB HBM3", {**real, "mem_bandwidth_gbs": 40.0}).verified
    assert not judge_benchmark("NVIDIA H100 80GB HBM3", {**real, "device": "cpu (8 threads)"}).verified
    assert not judge_benchmark("NVIDIA H100 80GB HBM3", {**real, "device": "NVIDIA GeForce RTX 3060"}).verified
    assert judge_benchmark("NVIDIA H100 80GB HBM3", {**real, "device": "NVIDIA H100 80GB HBM3"}).verified
    assert judge_benchmark("NVIDIA H100 80GB HBM3", {**real, "device": "cuda:0"}).verified
    assert not judge_benchmark("NVIDIA H100 80GB HBM3", {**real, "verified": False}).verified
    assert not judge_benchmark("NVIDIA H100 80GB HBM3", {**real, "fp32_tflops": "NaN"}).verified
    assert judge_benchmark("Some Future GPU", {**real, "fp32_tflops": 5.0}).verified  # unknown: minimum only
    assert judge_benchmark(None, {"device": "cpu", "fp32_tflops": 0.3, "verified": True}).verified  # a CPU agent
    assert judge_benchmark("NVIDIA H100 80GB HBM3", real).score == 48.0


@pytest.mark.parametrize("url", [
    "http://example.com/d.csv", "ftp://example.com/d.csv", "https://", "https://localhost/d.csv",
    "https://127.0.0.1/d.csv", "https://169.254.169.254/latest/meta-data/", "https://10.0.0.5/d.csv",
    "https://[::1]/d.csv", "https://user:pw@example.com/d.csv", "https://intranet/d.csv",
    "https://printer.local/d.csv", "https://example.com/a b.csv", "https://e.com/" + "x" * 500,
])
def test_dataset_urls_that_are_refused(url):
    with pytest.raises(UserError):
        workloads.validate("train", {"epochs": 1, "dataset": url})


def test_train_and_script_parameters():
    assert workloads.validate("train", {"epochs": "5", "dataset": "https://data.example.org/x.csv"}) == {
        "epochs": 5, "dataset": "https://data.example.org/x.csv"}
    assert workloads.validate("train", {}) == {"epochs": 3, "dataset": "synthetic"}
    assert workloads.validate("benchmark", {"anything": 1}) == {}
    for bad in ({"epochs": 0}, {"epochs": 101}, {"epochs": "many"}):
        with pytest.raises(UserError):
            workloads.validate("train", bad)
    assert workloads.validate("script", {"file_name": "run.py", "file_size": 10}) == {"file_name": "run.py"}
    for bad in ({"file_name": "run.sh", "file_size": 10}, {"file_name": "run.py", "file_size": 2 * 1024 * 1024},
                {"file_name": "run.py", "file_size": 0}):
        with pytest.raises(UserError):
            workloads.validate("script", bad)
    with pytest.raises(UserError):
        workloads.validate("mine_bitcoin", {})
    with pytest.raises(UserError):
        workloads.validate_time_limit(5 * 3600)


def test_prices_and_metering():
    assert price_per_hour("h100-80gb") == 2500 and price_per_hour("cpu") == 30
    assert price_per_hour("newgpu-32gb") == 800  # priced by memory when not listed
    assert price_per_hour("weird") == 100
    assert describe("h100-80gb") == "H100 80GB" and describe("cpu") == "CPU (no GPU)"
    assert max_cost(2500, 300) == 209  # 208.33 rounded up
    assert cost_of(2500, 1) == 1 and cost_of(2500, 0) == 0 and cost_of(3600, 10) == 10
    assert cost_of(30, 1) == 1  # a second of CPU still costs a whole credit, never zero for real work
