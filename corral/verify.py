"""vm.verify: the testinfra suites of tests/infra, run over each VM's own SSH connection."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from corral import lifecycle, output, paths
from corral.config import VM, Inventory, display
from corral.errors import CorralError
from corral.providers.base import Machine

log = logging.getLogger(__name__)

#: The suites, one module per concern (tools, security updates, credentials, isolation).
SUITES = paths.ROOT / "tests" / "infra"

#: Environment the suites read to know which VM they check and what it should have.
ENV_INVENTORY = "CORRAL_INVENTORY"
ENV_VM = "CORRAL_VM"
#: The folder the user ran the task from: a VM without ``project`` shares it.
ENV_CWD = "CORRAL_VERIFY_CWD"

# A whole run of the suites on one VM never takes this long; past it, something hangs.
TIMEOUT = 30 * 60

# pytest's exit codes that mean "the tests ran" (0 all passed, 1 some failed).
_RAN = (0, 1)


@dataclass(frozen=True)
class Check:
    """One test of a suite as it ran on one VM."""

    #: ``tools::test_gh_runs_at_pinned_version``, with the host parameter left out.
    name: str
    #: ``passed``, ``failed``, ``error`` or ``skipped``.
    outcome: str
    #: The first line of the failure (or skip reason); empty when it passed.
    message: str = ""


@dataclass
class Result:
    """What the suites found on one VM."""

    vm: str
    checks: list[Check] = field(default_factory=list)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.outcome in ("failed", "error")]

    @property
    def skipped(self) -> list[Check]:
        return [c for c in self.checks if c.outcome == "skipped"]

    @property
    def ran(self) -> int:
        return len(self.checks) - len(self.skipped)


def hostspec(machine: Machine) -> str:
    """The testinfra host for ``machine``: its alias through its own ssh.config.

    >>> hostspec(Machine("agent", "lima", "running", "lima-agent", Path("/s/ssh.config")))
    'ssh://lima-agent?ssh_config=/s/ssh.config'
    """
    if machine.ssh_config is None:
        raise CorralError(f"{machine.name}: the provider has no ssh.config for this VM yet "
                          f"(recreate it: uv run invoke vm.delete vm.create --name "
                          f"{machine.name})")
    # --hosts is split on commas and the query is URL-decoded: quote the path.
    return f"ssh://{machine.ssh_host}?ssh_config={quote(str(machine.ssh_config), safe='/')}"


def pytest_argv(host: str, junit_xml: Path, vm_name: str) -> list[str]:
    """The pytest command that runs every suite against ``host``.

    + host: a testinfra host (see :func:`hostspec`)
    + junit_xml: where pytest writes its report, which :func:`parse_junit` reads back
    + vm_name: names the test suite in that report
    """
    return [
        sys.executable, "-m", "pytest", str(SUITES),
        f"--hosts={host}",
        f"--junit-xml={junit_xml}",
        "-o", f"junit_suite_name=corral-verify-{vm_name}",
        "-o", "junit_family=xunit2",
        # The suites are not the project's own tests: no cache, no -ra noise from addopts.
        "-p", "no:cacheprovider",
        "--rootdir", str(paths.ROOT),
        "--tb=short", "-q",
    ]


def pytest_env(inventory: Inventory, vm: VM, cwd: Path | None = None) -> dict[str, str]:
    """The environment of the pytest run: this process's, plus which VM and inventory."""
    env = dict(os.environ)
    env[ENV_INVENTORY] = str(inventory.path.resolve())
    env[ENV_VM] = vm.name
    env[ENV_CWD] = str((cwd or Path.cwd()).resolve())
    return env


def parse_junit(path: Path, vm_name: str, host: str | None = None) -> Result:
    """The checks in a JUnit XML report that pytest wrote for one VM.

    + path: the report
    + vm_name: the VM the report is about
    + host: the testinfra host, left out of the check names (``[ssh://lima-agent-go]``
      reads ``[go]``)
    """
    host_id = _host_id(host) if host else None
    result = Result(vm=vm_name)
    for case in ET.parse(path).getroot().iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)[-1].removeprefix("test_")
        name = _without_host(case.get("name", ""), host_id)
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            element = case.find(tag)
            if element is not None:
                outcome = "failed" if tag == "failure" else tag
                message = _first_line(element.get("message") or element.text or "")
                break
        result.checks.append(Check(f"{module}::{name}" if module else name, outcome, message))
    return result


def merge_junit(reports: list[Path], dest: Path) -> None:
    """Write one JUnit XML file holding the test suites of every per-VM report."""
    merged = ET.Element("testsuites")
    for report in reports:
        root = ET.parse(report).getroot()
        suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
        merged.extend(suites)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    ET.ElementTree(merged).write(tmp, encoding="utf-8", xml_declaration=True)
    tmp.replace(dest)


def run(inventory: Inventory, names: str | None, junit_xml: str | Path | None = None) -> None:
    """Run the suites on each selected VM, print one result per VM, raise on any failure.

    + inventory: the validated inventory
    + names: comma-separated VM names, or None for every VM
    + junit_xml: also write every VM's results to this JUnit XML file

    Every VM must exist and run. Raises :class:`CorralError` naming each VM that failed
    and its failed checks.
    """
    vms = inventory.select(names)

    # Every VM must be there before anything runs: no half a report.
    machines = {vm.name: lifecycle.require(vm, running=True) for vm in vms}
    hosts = {vm.name: hostspec(machines[vm.name]) for vm in vms}

    logs = paths.state_dir() / "verify"
    logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="corral-verify-") as tmp:
        reports = {vm.name: Path(tmp) / f"{vm.name}.xml" for vm in vms}

        def one(vm: VM) -> Result:
            return _run_one(inventory, vm, hosts[vm.name], reports[vm.name],
                            logs / f"{vm.name}.log")

        # The VMs are independent: check them all at once.
        with ThreadPoolExecutor(max_workers=max(1, len(vms))) as pool:
            outcomes = list(pool.map(_catching(one), vms))

        if junit_xml:
            written = [reports[vm.name] for vm in vms if reports[vm.name].exists()]
            try:
                merge_junit(written, Path(junit_xml))
            except OSError as err:
                raise CorralError(f"{junit_xml}: cannot write the JUnit report "
                                  f"({err.strerror}); choose another --junit-xml") from None

    problems = []
    for vm, outcome in zip(vms, outcomes, strict=True):
        if isinstance(outcome, CorralError):
            output.mark("fail", str(outcome))
            problems.append(str(outcome))
            continue
        _summarise(outcome)
        if outcome.failed:
            checks = ", ".join(c.name for c in outcome.failed)
            problems.append(f"{vm.name}: {len(outcome.failed)} check(s) failed: {checks} "
                            f"(details: {logs / f'{vm.name}.log'})")
    if junit_xml:
        output.say(f"JUnit report: {display(Path(junit_xml))}")
    if problems:
        raise CorralError("\n".join(problems))


def _run_one(inventory: Inventory, vm: VM, host: str, report: Path, log_file: Path) -> Result:
    """Run the suites on one VM; the whole pytest output goes to ``log_file``."""
    argv = pytest_argv(host, report, vm.name)
    log.debug("%s: running %s", vm.name, " ".join(argv))
    with open(log_file, "w", encoding="utf-8") as sink:
        try:
            code = subprocess.run(
                argv, env=pytest_env(inventory, vm), cwd=paths.ROOT, stdout=sink,
                stderr=subprocess.STDOUT, timeout=TIMEOUT, check=False,
            ).returncode
        except subprocess.TimeoutExpired:
            raise CorralError(f"{vm.name}: the suites did not finish in {TIMEOUT // 60} "
                              f"minutes (see {log_file})") from None
    if code not in _RAN or not report.exists():
        raise CorralError(f"{vm.name}: the suites did not run ({_last_words(log_file)}; "
                          f"see {log_file})")
    return parse_junit(report, vm.name, host)


def _catching(func):
    """``func`` returning a :class:`CorralError` instead of raising it (for pool.map)."""

    def wrapper(vm: VM):
        try:
            return func(vm)
        except CorralError as err:
            return err

    return wrapper


def _summarise(result: Result) -> None:
    skipped = f", {len(result.skipped)} not applicable" if result.skipped else ""
    if not result.failed:
        output.mark("ok", f"{result.vm}: all {result.ran} checks passed{skipped}")
        return
    output.mark("fail", f"{result.vm}: {len(result.failed)} of {result.ran} checks "
                        f"failed{skipped}")
    for check in result.failed:
        output.say(f"    ✗ {check.name}: {check.message}")


def _without_host(name: str, host_id: str | None) -> str:
    """``test_x[ssh://lima-agent-go]`` read as ``test_x[go]`` (the host is the VM)."""
    if "[" not in name or not host_id:
        return name
    base, params = name.split("[", 1)
    params = params.removesuffix("]")
    for candidate in (f"{host_id}-", f"-{host_id}", host_id):
        if candidate in params:
            params = params.replace(candidate, "", 1)
            break
    return f"{base}[{params}]" if params else base


def _host_id(host: str) -> str:
    """How testinfra names ``host`` in test ids: ``ssh://lima-agent``, ``local``."""
    scheme, _, rest = host.partition("://")
    if scheme == "local":
        return "local"
    return f"{scheme}://{rest.split('?', 1)[0]}"


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0].removeprefix("AssertionError: ") if lines else ""


def _last_words(log_file: Path) -> str:
    """pytest's own words on why the suites did not run: its last ``E`` line, or last line."""
    try:
        lines = [line.strip() for line in log_file.read_text(errors="replace").splitlines()
                 if line.strip()]
    except OSError:
        return "no output"
    errors = [line.removeprefix("E").strip() for line in lines if line.startswith("E ")]
    if errors:
        return errors[-1]
    if not lines:
        return "no output"
    # pytest.exit() ends the output with "!!! _pytest.outcomes.Exit: REASON !!!".
    return lines[-1].strip("=!- ").split("outcomes.Exit: ", 1)[-1]
