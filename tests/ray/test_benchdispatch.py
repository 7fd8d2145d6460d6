"""``manage.py benchdispatch`` end to end through a real Ray cluster: it releases a held
backlog, times handler starts, splits CPU by process group, and cleans up after itself.
Figures are printed, never asserted (CI machines vary); what is asserted is that each was
measured."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import call_command

from tasks.models import Task

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_benchdispatch_measures_a_released_backlog_and_handler_starts(ray_cluster):
    out = io.StringIO()
    call_command("benchdispatch", tasks=300, latency_tasks=20, rate=100, dispatchers=1, stdout=out)
    text = out.getvalue()
    assert re.search(r"throughput: 300/300 echo tasks in [\d.]+ s = [\d,]+ tasks/s", text), text
    cpu = dict(re.findall(r"^  (\S+(?: \S+)?)\s+(\d+)$", text, flags=re.MULTILINE))
    assert {"PostgreSQL", "dispatchers", "Coordinator", "agents", "total"} <= set(cpu), text
    # Each of these did real work for every task, so none can be 0 µs.
    assert all(int(cpu[group]) > 0 for group in ("PostgreSQL", "dispatchers", "agents")), text
    latency = re.search(r"start latency: (\d+)/20 probe tasks .* p50 ([\d.]+) ms", text)
    assert latency and int(latency.group(1)) == 20 and float(latency.group(2)) > 0, text
    # The bare listener heard the probes' NOTIFYs, before their handlers started.
    heard = re.search(r"enqueue → NOTIFY ([\d.]+) ms", text)
    assert heard and 0 < float(heard.group(1)) < float(latency.group(2)), text
    call = re.search(r"a bare Ray actor call on this machine, .*: ([\d.]+) ms p50", text)
    assert call and float(call.group(1)) > 0, text
    assert not Task.objects.filter(description__startswith="benchdispatch").exists()
