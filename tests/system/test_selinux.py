"""The luigi_appliance SELinux module, checked with the real SELinux toolchain.

The module is built with ``make -C selinux`` (which uses /usr/share/selinux/devel/Makefile),
installed with ``semodule -p ROOT`` into a copy of Debian's selinux-policy-default store, the
scheduler port is assigned with the real ``semanage port`` command (run in a private mount
namespace where the copy is bind-mounted over /etc/selinux and /var/lib/selinux), and the
resulting kernel policy is queried with ``sesearch``/``seinfo``; file labels come from
``matchpathcon`` against the copy's file_contexts, and again with each policy family's path
aliases (file_contexts.subs_dist: RHEL's and Debian's alias /run and /var/run in opposite
directions).

Debian's reference policy is what CI has; users load the module into RHEL 9's targeted policy.
Rules granted by the base policy to attributes the module joins (``daemon``, ``domain``,
``nsswitch_domain``) are part of what the domain ends up with, so some expectations below name
Debian base booleans (``allow_ypbind`` is Debian's NIS switch, RHEL's is ``nis_enabled``).

``assert_labels`` and ``build_policy_root`` are meant for reuse, e.g. by a test that checks
the label of every path in the RPM payload.
"""

from __future__ import annotations

import re
import shutil
import stat
import struct
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SELINUX_SRC = REPO / "selinux"
MODULE = "luigi_appliance"
STORE = "default"  # Debian's selinux-policy-default store: /var/lib/selinux/default
PORT = 8082
OUR_BOOLEANS = {
    "luigi_appliance_can_network_connect_http",
    "luigi_appliance_httpd_connect",
    "luigi_appliance_use_nfs",
    "luigi_appliance_execmem",
}
# Permissions that change a file or directory (or its label).
MODIFY_PERMS = {
    "write", "append", "create", "unlink", "rename", "setattr", "link", "add_name", "remove_name",
    "reparent", "rmdir", "relabelfrom", "relabelto", "swapon", "quotaon", "mounton",
}
FILE_KINDS = {"file", "dir", "lnk_file", "sock_file", "pipe", "chr_file", "blk_file"}


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


# --- building and installing ----------------------------------------------------------------

def build_module(workdir: Path) -> Path:
    """Copy selinux/ to ``workdir`` and build it with its Makefile; return the .pp.bz2."""
    src = workdir / "selinux"
    src.mkdir(parents=True)
    for name in ("Makefile", f"{MODULE}.te", f"{MODULE}.if", f"{MODULE}.fc"):
        shutil.copy2(SELINUX_SRC / name, src / name)
    run(["make", "-C", str(src)])
    pp = src / f"{MODULE}.pp.bz2"
    assert pp.is_file() and (src / f"{MODULE}.pp").is_file()
    return pp


@dataclass(frozen=True)
class PolicyRoot:
    root: Path

    @property
    def policy(self) -> Path:
        # The kernel policy semodule writes for the store; one file, named policy.<version>.
        files = sorted((self.root / "etc/selinux" / STORE / "policy").glob("policy.*"))
        assert len(files) == 1, files
        return files[0]

    @property
    def file_contexts(self) -> Path:
        return self.root / "etc/selinux" / STORE / "contexts/files/file_contexts"

    def semanage(self, shell_command: str) -> subprocess.CompletedProcess:
        """Run a shell command line (semanage ...) against this root, as if it were the host's.

        A private mount namespace bind-mounts the copy over /etc/selinux and /var/lib/selinux, so
        the real semanage (which has no --root option) reads and writes the copy; the host's
        policy is untouched. -N on semanage commands: never load the policy into the kernel.
        """
        script = (
            f"mount --bind {self.root}/etc/selinux /etc/selinux && "
            f"mount --bind {self.root}/var/lib/selinux /var/lib/selinux && {shell_command}"
        )
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                              capture_output=True, text=True, timeout=600)

    def copy(self, dest: Path) -> PolicyRoot:
        shutil.copytree(self.root, dest, symlinks=True)
        return PolicyRoot(dest)


def build_policy_root(dest: Path, module: Path) -> PolicyRoot:
    """A copy of the host's Debian policy store at ``dest`` with ``module`` installed in it.

    Layout semodule -p expects: ROOT/var/lib/selinux/<store> (the module store) and
    ROOT/etc/selinux/{semanage.conf,config,<store>/} (where the built policy and contexts go).
    """
    (dest / "var/lib/selinux").mkdir(parents=True)
    (dest / "etc/selinux").mkdir(parents=True)
    shutil.copytree(f"/var/lib/selinux/{STORE}", dest / "var/lib/selinux" / STORE, symlinks=True)
    shutil.copytree(f"/etc/selinux/{STORE}", dest / "etc/selinux" / STORE, symlinks=True)
    for name in ("semanage.conf", "config"):
        shutil.copy2(f"/etc/selinux/{name}", dest / "etc/selinux" / name)
    before = (dest / "etc/selinux" / STORE / "policy").stat().st_mtime_ns
    # -n: do not reload the policy into the kernel.
    run(["semodule", "-n", "-p", str(dest), "-s", STORE, "-i", str(module)])
    proot = PolicyRoot(dest)
    assert proot.policy.stat().st_mtime_ns >= before
    listed = run(["semodule", "-p", str(dest), "-s", STORE, "-l"]).stdout.split()
    assert MODULE in listed
    return proot


# --- querying ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    kind: str  # allow, type_transition, ...
    source: str
    target: str
    tclass: str
    perms: frozenset[str]  # for type rules: the default type
    cond: str | None  # "bool_expr:True" / "bool_expr:False", None when unconditional

    @property
    def unconditional(self) -> bool:
        return self.cond is None


_RULE = re.compile(
    r"^(?P<kind>\w+) (?P<src>\S+) (?P<tgt>\S+):(?P<cls>\S+) (?:\{ (?P<perms>[^}]*) \}|(?P<perm>[^;\s]+))"
    r"(?: \S+)?;(?: \[ (?P<cond>.+) \]:(?P<branch>True|False))?$"
)


def sesearch(policy: Path, *args: str) -> list[Rule]:
    out = run(["sesearch", *args, str(policy)]).stdout
    rules = []
    for line in out.splitlines():
        line = line.strip()
        if not line:
            continue
        m = _RULE.match(line)
        assert m, f"cannot parse sesearch output line: {line!r}"
        perms = m["perms"].split() if m["perms"] is not None else [m["perm"]]
        cond = f"{m['cond']}:{m['branch']}" if m["cond"] else None
        rules.append(Rule(m["kind"], m["src"], m["tgt"], m["cls"], frozenset(perms), cond))
    return rules


def booleans(policy: Path) -> dict[str, bool]:
    out = run(["seinfo", str(policy), "-b", "-x"]).stdout
    found = re.findall(r"^\s*bool (\S+) (true|false);", out, re.M)
    assert found
    return {name: value == "true" for name, value in found}


def portcon(policy: Path, port: int) -> dict[str, str]:
    """{protocol: type} of the most specific portcon entry for ``port``."""
    out = run(["seinfo", str(policy), "--portcon", str(port)]).stdout
    best: dict[str, tuple[int, str]] = {}
    for proto, low, high, typ in re.findall(r"portcon (\w+) (\d+)(?:-(\d+))? \w+:\w+:(\w+)", out):
        width = int(high or low) - int(low)
        if proto not in best or width < best[proto][0]:
            best[proto] = (width, typ)
    return {proto: typ for proto, (_, typ) in best.items()}


# --- file labels --------------------------------------------------------------------------------

def file_types(file_contexts: Path, entries: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Type that restorecon would give each (path, kind), from a file_contexts file.

    ``kind`` is a file class (file, dir, lnk_file, sock_file, ...): entries restricted to a
    kind, such as ``--`` for regular files, match only that kind. The .subs/.subs_dist path
    aliases next to ``file_contexts`` (/var/run = /run, /lib = /usr/lib, ...) apply.
    """
    by_kind: dict[str, list[str]] = {}
    for path, kind in entries:
        assert kind in FILE_KINDS, kind
        assert path.startswith("/"), path
        by_kind.setdefault(kind, []).append(path)
    result = {}
    for kind, paths in by_kind.items():
        out = run(["matchpathcon", "-f", str(file_contexts), "-m", kind, *paths]).stdout
        lines = out.splitlines()
        assert len(lines) == len(paths), out
        for path, line in zip(paths, lines, strict=True):
            got_path, _, context = line.partition("\t")
            assert got_path == path, line
            result[(path, kind)] = context.split(":")[2] if context.count(":") >= 3 else context
    return result


def assert_labels(file_contexts: Path, expected: Iterable[tuple[str, str] | tuple[str, str, str]]) -> None:
    """Assert that each path gets its expected SELinux type from a file_contexts file.

    ``expected`` holds (path, type) or (path, type, kind); kind defaults to "file" (a regular
    file) and matters only for kind-restricted entries (the entry point, unit files).
    All mismatches are reported at once.
    """
    wanted = [(item[0], item[2] if len(item) > 2 else "file", item[1]) for item in expected]
    got = file_types(file_contexts, [(path, kind) for path, kind, _ in wanted])
    wrong = [f"{path} ({kind}): {got[(path, kind)]}, expected {typ}"
             for path, kind, typ in wanted if got[(path, kind)] != typ]
    assert not wrong, "wrong labels:\n" + "\n".join(wrong)


# Path aliases of the two policy families: file_contexts.subs_dist as each ships it ("/alias
# /path-as-written-in-file_contexts"). libselinux rewrites a path's alias prefix before matching,
# so a file context written under the aliased spelling never matches. RHEL 9: config/
# file_contexts.subs_dist of fedora-selinux/selinux-policy, branch c9s (/run is an alias of
# /var/run); Debian 12: selinux-policy-default 2:2.20221101 (/var/run is an alias of /run).
SUBS_DIST = {
    "el9": """\
/etc/init.d /etc/rc.d/init.d
/lib32 /lib
/lib64 /lib
/run /var/run
/run/lock /var/lock
/usr/lib32 /usr/lib
/usr/lib64 /usr/lib
/usr/local/lib32 /usr/lib
/usr/local/lib64 /usr/lib
/usr/local/lib /usr/lib
/var/run/lock /var/lock
/sbin /usr/sbin
""",
    "debian": """\
/bin /usr/bin
/lib /usr/lib
/lib32 /usr/lib
/lib64 /usr/lib
/libx32 /usr/lib
/sbin /usr/sbin
/etc/init.d /etc/rc.d/init.d
/etc/systemd/system /usr/lib/systemd/system
/etc/systemd/user /usr/lib/systemd/user
/lib/systemd /usr/lib/systemd
/run/lock /var/lock
/usr/lib32 /usr/lib
/usr/lib64 /usr/lib
/usr/libx32 /usr/lib
/usr/local/lib32 /usr/lib
/usr/local/lib64 /usr/lib
/usr/local/lib /usr/lib
/var/lib/private /var/lib
/var/cache/private /var/cache
/var/log/private /var/log
/var/run /run
""",
}


def with_aliases(file_contexts: Path, family: str, dest: Path) -> Path:
    """A copy of ``file_contexts`` in ``dest`` whose path aliases are ``family``'s, not the host's."""
    dest.mkdir(parents=True)
    copy = dest / "file_contexts"
    shutil.copy2(file_contexts, copy)  # the text only: a file_contexts.bin next to it would be used instead
    (dest / "file_contexts.subs_dist").write_text(SUBS_DIST[family])
    return copy


# --- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def proot(tmp_path_factory) -> PolicyRoot:
    work = tmp_path_factory.mktemp("selinux")
    pp = build_module(work / "build")
    proot = build_policy_root(work / "root", pp)
    # What the -selinux package's %post does: tcp/8082 is unreserved_port_t on Debian, so -a
    # works; on RHEL it is already us_cli_port_t and the -m fallback does it.
    cmd = (f"semanage port -N -a -t luigi_appliance_port_t -p tcp {PORT} || "
           f"semanage port -N -m -t luigi_appliance_port_t -p tcp {PORT}")
    proc = proot.semanage(cmd)
    assert proc.returncode == 0, proc.stderr
    return proot


@pytest.fixture(scope="module")
def policy(proot) -> Path:
    return proot.policy


@pytest.fixture(scope="module", params=["store", *SUBS_DIST])
def contexts(request, proot, tmp_path_factory) -> Path:
    """The module's compiled file contexts: as the local store has them, then with each policy
    family's path aliases."""
    if request.param == "store":
        return proot.file_contexts
    return with_aliases(proot.file_contexts, request.param, tmp_path_factory.mktemp("aliases") / request.param)


class Domain:
    """The allow rules that apply to luigi_appliance_t, from one sesearch run, filtered here.

    sesearch -s TYPE also returns rules whose source is an attribute of TYPE (daemon, domain,
    nsswitch_domain); ``rules(target=T)`` likewise matches a target that is T or one of T's
    attributes, as ``sesearch -t T`` would.
    """

    def __init__(self, policy: Path):
        self.policy = policy
        self.all = sesearch(policy, "-A", "-s", "luigi_appliance_t")
        self._attrs: dict[str, set[str]] = {}

    def attributes(self, typ: str) -> set[str]:
        if typ not in self._attrs:
            out = run(["seinfo", str(self.policy), "-t", typ, "-x"]).stdout
            m = re.search(r"^\s*type (\w+)(?: alias (?:\{[^}]*\}|\w+))?(?:,|;)(.*)$", out, re.M)
            assert m and m[1] == typ, out
            self._attrs[typ] = {a.strip(" ;") for a in m[2].split(",") if a.strip(" ;")}
        return self._attrs[typ]

    def rules(self, target: str | None = None, tclass: str | None = None, perm: str | None = None) -> list[Rule]:
        targets = {target, *self.attributes(target)} if target else None
        if target == "luigi_appliance_t":
            targets.add("self")
        return [r for r in self.all
                if (targets is None or r.target in targets)
                and (tclass is None or r.tclass == tclass)
                and (perm is None or perm in r.perms)]

    def perms(self, target: str, tclass: str) -> set[str]:
        """Permissions granted unconditionally on target:tclass."""
        return set().union(*(r.perms for r in self.rules(target, tclass) if r.unconditional))


@pytest.fixture(scope="module")
def dom(policy) -> Domain:
    return Domain(policy)


# --- tests ----------------------------------------------------------------------------------------

def test_module_is_a_bzip2_package_of_the_pp(proot, tmp_path):
    # The RPM ships the .pp.bz2; semodule accepted it above. It is the .pp, compressed.
    build = proot.root.parent / "build/selinux"
    out = tmp_path / "unpacked.pp"
    with out.open("wb") as fh:
        subprocess.run(["bzip2", "-dc", str(build / f"{MODULE}.pp.bz2")], stdout=fh, check=True)
    assert out.read_bytes() == (build / f"{MODULE}.pp").read_bytes()


# Newest module format each target's libsepol reads (libsepol/include/sepol/policydb/policydb.h,
# MOD_POLICYDB_VERSION_MAX): EL8 has libsepol 2.9, EL9.0 3.3, EL9.1 and later 3.4 or newer.
MODULE_FORMAT_MAX = {"EL8": 19, "EL9.0": 20, "EL9.1+": 21}


def test_module_format_is_one_every_el_release_loads(proot, tmp_path):
    # checkmodule writes its newest format unless told otherwise, so a module built on a newer
    # host (Debian 12 and EL9.1+ write 21) would not load on an older EL. The header of the
    # module inside the package: magic, "SE Linux Module", policy type, format version, config.
    build = proot.root.parent / "build/selinux"
    mod = tmp_path / "module.mod"
    run(["semodule_unpackage", str(build / f"{MODULE}.pp"), str(mod), str(tmp_path / "module.fc")])
    data = mod.read_bytes()
    magic, length = struct.unpack_from("<II", data)
    assert (magic, data[8:8 + length]) == (0xF97CFF8D, b"SE Linux Module")
    policy_type, version, config = struct.unpack_from("<III", data, 8 + length)
    assert policy_type == 2  # POLICY_MOD
    assert config & 1  # POLICYDB_CONFIG_MLS: both target policies are MCS policies
    too_new = {release: limit for release, limit in MODULE_FORMAT_MAX.items() if version > limit}
    assert not too_new, f"module format {version} is too new for {too_new}"


def test_init_transitions_into_the_domain_on_the_entry_point(policy):
    trans = sesearch(policy, "-T", "-s", "init_t", "-t", "luigi_appliance_exec_t", "-c", "process")
    assert [(r.target, r.perms, r.cond) for r in trans] == [
        ("luigi_appliance_exec_t", frozenset({"luigi_appliance_t"}), None)]
    to_domain = sesearch(policy, "-A", "-s", "init_t", "-t", "luigi_appliance_t")
    process = set().union(*(r.perms for r in to_domain if r.unconditional and r.tclass == "process"))
    assert "transition" in process
    # systemd sandboxing sets no_new_privs: the transition must be an allowed nnp transition.
    process2 = set().union(*(r.perms for r in to_domain if r.unconditional and r.tclass == "process2"))
    assert {"nnp_transition", "nosuid_transition"} <= process2


def test_only_init_enters_the_domain_and_only_through_its_entry_point(policy, dom):
    # Nothing else (no user domain, no bin_t program) lands in the scheduler's domain.
    into = sesearch(policy, "-T", "-D", "luigi_appliance_t", "-c", "process")
    assert {r.source for r in into} <= {"init_t", "initrc_t"}, into
    assert {r.target for r in dom.rules(tclass="file", perm="entrypoint")} == {"luigi_appliance_exec_t"}
    users = sesearch(policy, "-A", "-t", "luigi_appliance_exec_t", "-c", "file", "-p", "entrypoint")
    assert {r.source for r in users} == {"luigi_appliance_t"}


def test_port_8082_is_labelled_and_is_the_only_port_type_the_domain_binds(policy, dom):
    assert portcon(policy, PORT)["tcp"] == "luigi_appliance_port_t"
    binds = {(r.tclass, r.target, r.cond) for r in dom.rules(perm="name_bind")}
    # Debian's auth_use_nsswitch lets every nsswitch_domain bind port_t when NIS is enabled
    # (allow_ypbind, off by default); the module adds nothing else. No attribute such as
    # port_type appears, so no *_all_ports interface is in effect.
    assert binds == {
        ("tcp_socket", "luigi_appliance_port_t", None),
        ("tcp_socket", "port_t", "allow_ypbind:True"),
        ("udp_socket", "port_t", "allow_ypbind:True"),
    }, binds
    assert booleans(policy)["allow_ypbind"] is False
    assert "node_bind" in dom.perms("node_t", "tcp_socket")  # listen on a given address


def test_the_domain_connects_to_postgresql_and_ldap_and_http_only_by_boolean(dom):
    connects = dom.rules(tclass="tcp_socket", perm="name_connect")
    assert {r.target for r in dom.rules(perm="name_connect")} == {r.target for r in connects}  # TCP only
    unconditional = {r.target for r in connects if r.unconditional}
    # DNS over TCP comes with sysnet_dns_name_resolve.
    assert unconditional == {"postgresql_port_t", "ldap_port_t", "dns_port_t"}
    ours = {(r.target, r.cond) for r in connects if r.cond and "luigi_appliance" in r.cond}
    assert ours == {("http_port_t", "luigi_appliance_can_network_connect_http:True"),
                    ("http_cache_port_t", "luigi_appliance_can_network_connect_http:True")}
    # The rest come from the base policy's nsswitch booleans (NIS, Kerberos, LDAP accounts).
    base = {r.cond.split(":")[0] for r in connects if r.cond and "luigi_appliance" not in r.cond}
    assert base <= {"allow_ypbind", "allow_kerberos", "authlogin_nsswitch_use_ldap"}, base


def test_port_already_assigned_by_the_base_policy_needs_semanage_m(proot, tmp_path):
    # On RHEL 9, tcp/8082 is us_cli_port_t in the base policy. Debian's tcp/5432
    # (postgresql_port_t) plays that part here: -a refuses, -m overrides, -d restores.
    # (A portcon statement shipped inside the module would silently lose to the base one.)
    copy = proot.copy(tmp_path / "root")
    add = copy.semanage("semanage port -N -a -t luigi_appliance_port_t -p tcp 5432")
    assert add.returncode != 0 and "already defined" in add.stderr
    modify = copy.semanage("semanage port -N -m -t luigi_appliance_port_t -p tcp 5432")
    assert modify.returncode == 0, modify.stderr
    assert portcon(copy.policy, 5432)["tcp"] == "luigi_appliance_port_t"
    delete = copy.semanage("semanage port -N -d -p tcp 5432")
    assert delete.returncode == 0, delete.stderr
    assert portcon(copy.policy, 5432)["tcp"] == "postgresql_port_t"


@pytest.mark.parametrize("secret", ["shadow_t", "user_home_t", "user_home_dir_t", "ssh_home_t",
                                    "luigi_appliance_worker_conf_t"])
def test_the_domain_cannot_read_secrets_homes_or_worker_credentials(dom, secret):
    # No rule at all, under any boolean. Debian's nsswitch_domain may search home directories
    # themselves (user_home_dir_t), never read or list them.
    rules = dom.rules(target=secret)
    if secret == "user_home_dir_t":
        assert all(r.tclass == "dir" and r.perms <= {"getattr", "open", "search"} for r in rules), rules
    else:
        assert rules == [], rules


@pytest.mark.parametrize("config", ["etc_t", "luigi_appliance_conf_t"])
def test_the_domain_cannot_modify_configuration(dom, config):
    rules = dom.rules(target=config)
    assert "read" in dom.perms(config, "file")  # it does read it
    changing = [r for r in rules if r.perms & MODIFY_PERMS]
    assert changing == [], changing


def test_logs_are_create_and_append_only_and_logrotate_rotates_them(policy, dom):
    perms = set().union(*(r.perms for r in dom.rules("luigi_appliance_log_t", "file")))
    assert {"create", "append", "open"} <= perms
    assert not perms & {"write", "unlink", "rename", "setattr", "link", "read"}, perms
    rotate = sesearch(policy, "-A", "-s", "logrotate_t", "-t", "luigi_appliance_log_t")
    file_perms = set().union(*(r.perms for r in rotate if r.unconditional and r.tclass == "file"))
    assert {"create", "rename", "unlink", "write", "setattr", "read"} <= file_perms
    dir_perms = set().union(*(r.perms for r in rotate if r.unconditional and r.tclass == "dir"))
    assert {"add_name", "remove_name"} <= dir_perms


def test_state_runtime_and_tmp_are_managed(policy, dom):
    for typ, classes in (("luigi_appliance_var_lib_t", ("file", "dir")),
                         ("luigi_appliance_runtime_t", ("sock_file", "dir", "file")),
                         ("luigi_appliance_tmp_t", ("file", "dir", "sock_file"))):
        for tclass in classes:
            assert {"create", "write", "unlink", "rename"} <= dom.perms(typ, tclass), (typ, tclass)
    # files and directories it creates in /tmp get its own type
    trans = sesearch(policy, "-T", "-s", "luigi_appliance_t", "-t", "tmp_t")
    assert {(r.tclass, next(iter(r.perms))) for r in trans} >= {("file", "luigi_appliance_tmp_t"),
                                                                  ("dir", "luigi_appliance_tmp_t")}
    # systemd-tmpfiles can create /run/luigi-appliance (the tmpfiles.d entry)
    tmpfiles = sesearch(policy, "-A", "-s", "systemd_tmpfiles_t", "-t", "luigi_appliance_runtime_t", "-c", "dir")
    assert "create" in set().union(*(r.perms for r in tmpfiles if r.unconditional))


@pytest.mark.parametrize(("target", "tclass", "perm"), [
    ("cert_t", "file", "read"),  # system CA certificates
    ("urandom_device_t", "chr_file", "read"),
    ("devlog_t", "sock_file", "write"),  # syslog, and journald's native protocol (also in the namespace)
    ("syslogd_t", "unix_dgram_socket", "sendto"),  # the native protocol's datagrams to journald
    ("init_t", "unix_dgram_socket", "sendto"),  # sd_notify (Type=notify)
    ("init_t", "unix_stream_socket", "write"),  # stderr to journald, through systemd
    ("net_conf_t", "file", "read"),  # resolv.conf
    ("bin_t", "file", "execute"),  # /opt/luigi-appliance/bin/python -> /usr/bin/python3.1x
    ("bin_t", "lnk_file", "read"),
    ("lib_t", "file", "map"),  # C extensions, mmap'd executable
    ("lib_t", "file", "execute"),
    ("usr_t", "file", "read"),  # pyvenv.cfg, /usr/share
    ("luigi_appliance_exec_t", "file", "read"),  # the entry-point script
    ("luigi_appliance_conf_t", "file", "read"),
    ("luigi_appliance_port_t", "tcp_socket", "name_bind"),
    ("postgresql_t", "unix_stream_socket", "connectto"),  # local PostgreSQL over its socket
])
def test_what_the_scheduler_needs_at_run_time(dom, target, tclass, perm):
    assert perm in dom.perms(target, tclass)


def test_no_permissive_no_capabilities_no_execmem_by_default(policy, dom):
    out = run(["seinfo", str(policy), "--permissive"]).stdout
    assert "luigi_appliance" not in out
    for tclass in ("capability", "capability2", "cap_userns", "cap2_userns"):
        assert [r for r in dom.rules(tclass=tclass) if r.unconditional] == []
    risky = {"execmem", "execstack", "execheap", "ptrace", "setcurrent", "dyntransition"}
    assert [r for r in dom.rules(tclass="process") if r.unconditional and r.perms & risky] == []


def test_booleans_exist_default_off_and_gate_what_they_say(policy, dom):
    values = booleans(policy)
    ours = {name for name in values if name.startswith("luigi_appliance")}
    assert ours == OUR_BOOLEANS
    assert not any(values[name] for name in ours)

    def gated(boolean: str) -> set[tuple[str, str, str, str]]:
        rules = sesearch(policy, "-A", "-b", boolean)
        assert rules and all(r.cond == f"{boolean}:True" for r in rules), rules
        return {(r.source, r.target, r.tclass, p) for r in rules for p in r.perms}

    http = gated("luigi_appliance_can_network_connect_http")
    assert ("luigi_appliance_t", "http_port_t", "tcp_socket", "name_connect") in http
    assert ("luigi_appliance_t", "http_cache_port_t", "tcp_socket", "name_connect") in http
    assert {src for src, *_ in http} == {"luigi_appliance_t"}

    proxy = gated("luigi_appliance_httpd_connect")
    assert ("httpd_t", "luigi_appliance_t", "unix_stream_socket", "connectto") in proxy
    assert ("httpd_t", "luigi_appliance_runtime_t", "sock_file", "write") in proxy
    assert ("httpd_t", "luigi_appliance_port_t", "tcp_socket", "name_connect") in proxy
    assert {src for src, *_ in proxy} == {"httpd_t"}

    nfs = gated("luigi_appliance_use_nfs")
    assert ("luigi_appliance_t", "nfs_t", "file", "write") in nfs
    assert ("luigi_appliance_t", "nfs_t", "dir", "add_name") in nfs
    assert {(src, tgt) for src, tgt, *_ in nfs} == {("luigi_appliance_t", "nfs_t")}

    assert gated("luigi_appliance_execmem") == {("luigi_appliance_t", "luigi_appliance_t", "process", "execmem")}

    # ... and none of it is granted without the boolean.
    assert [r for r in sesearch(policy, "-A", "-s", "httpd_t", "-t", "luigi_appliance_t") if r.unconditional] == []
    assert [r for r in dom.rules("http_port_t") if r.unconditional] == []
    assert [r for r in dom.rules("http_cache_port_t") if r.unconditional] == []
    assert [r for r in dom.rules("nfs_t") if r.unconditional] == []


def venv_labels(version: str) -> list[tuple[str, str] | tuple[str, str, str]]:
    """The interpreter-specific paths of the venv, for python``version`` (EL9: 3.11 or 3.12)."""
    lib = f"/opt/luigi-appliance/lib/python{version}/site-packages"
    tag = "cpython-" + version.replace(".", "")
    return [
        (f"/opt/luigi-appliance/bin/python{version}", "bin_t", "lnk_file"),
        (f"/usr/bin/python{version}", "bin_t"),
        (f"{lib}/luigi/scheduler.py", "lib_t"),
        (f"{lib}/luigi/__pycache__/scheduler.{tag}.pyc", "lib_t"),
        (f"{lib}/psycopg2/_psycopg.{tag}-x86_64-linux-gnu.so", "lib_t"),
        (f"{lib}/psycopg2_binary.libs/libpq-9b38f5e3.so.5.16", "lib_t"),
    ]


LABELS = [
    # The venv runs on the AppStream interpreter the spec's %venv_python names.
    *venv_labels("3.11"),
    *venv_labels("3.12"),
    ("/opt/luigi-appliance/bin/luigi-appliance", "luigi_appliance_exec_t"),
    ("/opt/luigi-appliance/bin/python", "bin_t", "lnk_file"),
    ("/usr/bin/luigi-appliance", "bin_t", "lnk_file"),
    ("/opt/luigi-appliance/pyvenv.cfg", "usr_t"),
    ("/opt/luigi-appliance/lib64", "lib_t", "lnk_file"),
    ("/etc/luigi-appliance", "luigi_appliance_conf_t", "dir"),
    ("/etc/luigi-appliance/scheduler.conf", "luigi_appliance_conf_t"),
    ("/etc/luigi-appliance/scheduler.conf.d", "luigi_appliance_conf_t", "dir"),
    ("/etc/luigi-appliance/scheduler.conf.d/10-tls.conf", "luigi_appliance_conf_t"),
    ("/etc/luigi-appliance/client.conf", "luigi_appliance_conf_t"),
    ("/etc/luigi-appliance/users", "luigi_appliance_conf_t"),
    ("/etc/luigi-appliance/secret.key", "luigi_appliance_conf_t"),
    ("/etc/luigi-appliance/tls/scheduler.key", "luigi_appliance_conf_t"),
    ("/etc/luigi-appliance/pipelines", "luigi_appliance_worker_conf_t", "dir"),
    ("/etc/luigi-appliance/pipelines/example.env.sample", "luigi_appliance_worker_conf_t"),
    ("/etc/luigi-appliance/credentials", "luigi_appliance_worker_conf_t", "dir"),
    ("/etc/luigi-appliance/credentials/etl.db-password", "luigi_appliance_worker_conf_t"),
    ("/var/lib/luigi-appliance", "luigi_appliance_var_lib_t", "dir"),
    ("/var/lib/luigi-appliance/state.pickle", "luigi_appliance_var_lib_t"),
    ("/var/lib/luigi-appliance/state.key", "luigi_appliance_var_lib_t"),
    ("/var/lib/luigi-appliance/tls-selfsigned.crt", "luigi_appliance_var_lib_t"),
    ("/var/log/luigi-appliance", "luigi_appliance_log_t", "dir"),
    ("/var/log/luigi-appliance/audit.log", "luigi_appliance_log_t"),
    ("/var/log/luigi-appliance/audit.log.1", "luigi_appliance_log_t"),
    # Under both spellings and both families' aliases (the unit's RuntimeDirectory= makes
    # /run/luigi-appliance; tools and admins also write /var/run).
    ("/run/luigi-appliance", "luigi_appliance_runtime_t", "dir"),
    ("/run/luigi-appliance/x.sock", "luigi_appliance_runtime_t", "sock_file"),
    ("/var/run/luigi-appliance", "luigi_appliance_runtime_t", "dir"),
    ("/var/run/luigi-appliance/x.sock", "luigi_appliance_runtime_t", "sock_file"),
    ("/usr/lib/systemd/system/luigi-appliance.service", "luigi_appliance_unit_file_t"),
    ("/usr/lib/systemd/system/luigi-appliance-worker@.service", "luigi_appliance_unit_file_t"),
    ("/usr/lib/systemd/system/luigi-appliance-worker@.timer", "luigi_appliance_unit_file_t"),
    # The journal namespace's sockets (LogNamespace=luigi-appliance) as the default namespace's,
    # its files as journald's own (the base policy's /var/log/journal(/.*)? covers them).
    ("/run/systemd/journal.luigi-appliance/socket", "devlog_t", "sock_file"),
    ("/run/systemd/journal.luigi-appliance/stdout", "devlog_t", "sock_file"),
    ("/var/run/systemd/journal.luigi-appliance/socket", "devlog_t", "sock_file"),
    ("/run/systemd/journal.luigi-appliance", "syslogd_runtime_t", "dir"),
    ("/run/systemd/journal.luigi-appliance/io.systemd.journal", "syslogd_runtime_t", "sock_file"),
    ("/var/log/journal/0123456789abcdef0123456789abcdef.luigi-appliance/system.journal", "systemd_journal_t"),
    # left to the base policy
    ("/etc/sysconfig/luigi-appliance", "etc_t"),
    ("/etc/logrotate.d/luigi-appliance", "etc_t"),
]


def test_file_contexts(contexts):
    assert_labels(contexts, LABELS)


@pytest.mark.parametrize(("family", "matching_line"), [("el9", "/var/run"), ("debian", "/run")])
def test_each_familys_aliases_decide_which_spelling_matches(tmp_path, family, matching_line):
    # What test_file_contexts relies on: the family's aliases apply, so a path under either
    # spelling is matched by the file context written under one spelling only.
    probe = tmp_path / "probe"
    probe.write_text("/run/probe(/.*)?\tsystem_u:object_r:run_spelling_t:s0\n"
                     "/var/run/probe(/.*)?\tsystem_u:object_r:var_run_spelling_t:s0\n")
    fc = with_aliases(probe, family, tmp_path / family)
    expected = "var_run_spelling_t" if matching_line == "/var/run" else "run_spelling_t"
    assert_labels(fc, [("/run/probe/x.sock", expected, "sock_file"), ("/var/run/probe/x.sock", expected, "sock_file")])


def test_assert_labels_reports_every_mismatch(proot):
    with pytest.raises(AssertionError) as info:
        assert_labels(proot.file_contexts, [("/etc/luigi-appliance/users", "etc_t"),
                              ("/opt/luigi-appliance/bin/luigi-appliance", "luigi_appliance_exec_t", "lnk_file"),
                              ("/var/lib/luigi-appliance/state.pickle", "luigi_appliance_var_lib_t")])
    message = str(info.value)
    assert "/etc/luigi-appliance/users (file): luigi_appliance_conf_t, expected etc_t" in message
    assert "/opt/luigi-appliance/bin/luigi-appliance (lnk_file): bin_t" in message
    assert "state.pickle" not in message


# Symlinks in the package; exec follows them, so the target's label decides the domain.
PACKAGE_SYMLINKS = {
    "/usr/bin/luigi-appliance": "/opt/luigi-appliance/bin/luigi-appliance",
    "/opt/luigi-appliance/bin/python": "/usr/bin/python3.12",  # or python3.11: bin_t as well (LABELS)
}


def exec_starts(unit: Path) -> list[str]:
    """Executables of the ExecStart*/ExecReload/ExecStop* lines of a unit file."""
    found = []
    for line in unit.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and re.fullmatch(r"Exec(Start|StartPre|StartPost|Reload|Stop|StopPost|Condition)", key.strip()):
            if value.strip():
                found.append(value.split()[0].lstrip("-@:+!"))
    return found


def test_pipeline_workers_never_enter_the_scheduler_domain(proot):
    # Only luigi-appliance.service may start a program labelled luigi_appliance_exec_t: a worker
    # started through it would run user code in luigi_appliance_t (selinux/README.md, "Pipeline
    # workers"). Workers start the interpreter instead: python -m luigi_appliance run.
    units = sorted((REPO / "etc/systemd").glob("*.service"))
    assert {u.name for u in units} >= {"luigi-appliance.service", "luigi-appliance-worker@.service"}
    programs = {(u.name, exe, PACKAGE_SYMLINKS.get(exe, exe)) for u in units for exe in exec_starts(u)}
    types = file_types(proot.file_contexts, {(target, "file") for _, _, target in programs})
    enters = {(name, exe) for name, exe, target in programs if types[(target, "file")] == "luigi_appliance_exec_t"}
    assert ("luigi-appliance.service", "/opt/luigi-appliance/bin/luigi-appliance") in enters
    # The history prune runs the appliance's own command (no pipeline code) with the scheduler's
    # configuration and database access, so it is meant to run in the scheduler's domain too.
    assert {name for name, _ in enters} == {"luigi-appliance.service", "luigi-appliance-history-prune.service"}, enters


# What the -selinux package's %postun must do before semodule -r (selinux/README.md, "For the RPM").
POSTUN_PORT_CLEANUP = """
for port in $(semanage port -l -C |
        awk '$1 == "luigi_appliance_port_t" && $2 == "tcp" { $1 = ""; $2 = ""; gsub(",", " "); print }'); do
    semanage port -N -d -p tcp "$port"
done
"""


def test_uninstall_needs_the_port_records_removed_first(proot, tmp_path):
    # semodule -r fails while a port is still assigned to luigi_appliance_port_t; the
    # %postun loop removes every such port (8082 and one an admin added), then it succeeds.
    copy = proot.copy(tmp_path / "root")
    added = copy.semanage("semanage port -N -a -t luigi_appliance_port_t -p tcp 9400-9410")
    assert added.returncode == 0, added.stderr
    stuck = subprocess.run(["semodule", "-n", "-p", str(copy.root), "-s", STORE, "-r", MODULE],
                           capture_output=True, text=True, timeout=600)
    assert stuck.returncode != 0 and "luigi_appliance_port_t" in stuck.stderr
    cleanup = copy.semanage(POSTUN_PORT_CLEANUP + "semanage port -l -C")
    assert cleanup.returncode == 0, cleanup.stderr
    assert "luigi_appliance_port_t" not in cleanup.stdout
    run(["semodule", "-n", "-p", str(copy.root), "-s", STORE, "-r", MODULE])
    assert MODULE not in run(["semodule", "-p", str(copy.root), "-s", STORE, "-l"]).stdout.split()
    assert "Types: 0" in run(["seinfo", str(copy.policy), "-t", "luigi_appliance_t"]).stdout
    assert portcon(copy.policy, PORT)["tcp"] == "unreserved_port_t"


IFTEST_TE = """policy_module(luigi_appliance_iftest, 1.0.0)

type luigi_appliance_iftest_t;
domain_type(luigi_appliance_iftest_t)

luigi_appliance_exec(luigi_appliance_iftest_t)
luigi_appliance_read_config(luigi_appliance_iftest_t)
luigi_appliance_read_log(luigi_appliance_iftest_t)
luigi_appliance_stream_connect(luigi_appliance_iftest_t)
luigi_appliance_tcp_connect(luigi_appliance_iftest_t)
luigi_appliance_admin(luigi_appliance_iftest_t)
"""


def test_every_interface_compiles_and_links(proot, tmp_path):
    # Interfaces are m4 macros: nothing checks them until a module calls them. A module that
    # calls each one is built next to ours (the devel Makefile reads the .if files of the
    # modules in the directory) and installed on top of it.
    src = tmp_path / "iftest"
    src.mkdir()
    for name in (f"{MODULE}.te", f"{MODULE}.if"):
        shutil.copy2(SELINUX_SRC / name, src / name)
    declared = set(re.findall(r"^interface\(`(\w+)'", (src / f"{MODULE}.if").read_text(), re.M))
    called = set(re.findall(r"^(luigi_appliance_\w+)\(", IFTEST_TE, re.M))
    assert declared == called
    (src / "luigi_appliance_iftest.te").write_text(IFTEST_TE)
    (src / "luigi_appliance_iftest.fc").write_text("")
    (src / "luigi_appliance_iftest.if").write_text("")
    run(["make", "-f", "/usr/share/selinux/devel/Makefile", "luigi_appliance_iftest.pp"], cwd=src)
    copy = proot.copy(tmp_path / "root")
    run(["semodule", "-n", "-p", str(copy.root), "-s", STORE, "-i", str(src / "luigi_appliance_iftest.pp")])
    rules = sesearch(copy.policy, "-A", "-s", "luigi_appliance_iftest_t", "-t", "luigi_appliance_unit_file_t",
                     "-c", "service")
    assert {"start", "stop", "status", "reload"} <= set().union(*(r.perms for r in rules))
    connect = sesearch(copy.policy, "-A", "-s", "luigi_appliance_iftest_t", "-t", "luigi_appliance_t",
                       "-c", "unix_stream_socket", "-p", "connectto")
    assert connect


# --- every path the RPM installs -----------------------------------------------------------------

# The intended type of each path the packages install, by the first matching prefix. A new path
# in rpm/expected-payload.txt (which tests/system/test_rpm.py holds equal to the built RPMs) that no
# rule covers fails the test, so no installed path goes unlabelled by accident.
PAYLOAD_RULES = [
    ("/etc/luigi-appliance/pipelines", "luigi_appliance_worker_conf_t"),
    ("/etc/luigi-appliance/credentials", "luigi_appliance_worker_conf_t"),
    ("/etc/luigi-appliance", "luigi_appliance_conf_t"),
    ("/var/lib/luigi-appliance", "luigi_appliance_var_lib_t"),
    ("/var/log/luigi-appliance", "luigi_appliance_log_t"),
    ("/run/luigi-appliance", "luigi_appliance_runtime_t"),
    ("/opt/luigi-appliance/bin/luigi-appliance", "luigi_appliance_exec_t"),
    ("/usr/lib/systemd/system/luigi-appliance", "luigi_appliance_unit_file_t"),
]
# Paths that keep the base policy's label (documentation, the venv's other files, shared
# system directories): the module must not claim them.
PAYLOAD_UNCLAIMED = ("/usr/share/", "/usr/lib/firewalld", "/usr/lib/sysusers.d/", "/usr/lib/tmpfiles.d/",
                     "/etc/logrotate.d/", "/etc/sysconfig/", "/usr/bin/luigi-appliance", "/opt/luigi-appliance",
                     "/var/lib/selinux/",
                     # journald's own configuration and catalog, read by journald and journalctl
                     "/etc/systemd/journald@luigi-appliance.conf", "/usr/lib/systemd/catalog/",
                     # the example notification program: bin_t, which the scheduler may execute
                     "/usr/libexec/luigi-appliance")


def test_every_payload_path_gets_its_intended_label(contexts) -> None:
    expected, unclaimed = [], []
    for line in (REPO / "rpm" / "expected-payload.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        _package, path, mode = line.split()[:3]
        st_mode = int(mode, 8)
        kind = "dir" if stat.S_ISDIR(st_mode) else "lnk_file" if stat.S_ISLNK(st_mode) else "file"
        rule = next((t for prefix, t in PAYLOAD_RULES if path == prefix or path.startswith(prefix + "/")
                     or (prefix.endswith("luigi-appliance") and path.startswith(prefix))), None)
        if rule is not None:
            expected.append((path, rule, kind))
        else:
            assert path.startswith(PAYLOAD_UNCLAIMED), f"{path}: no intended label (add a rule)"
            unclaimed.append((path, kind))
    assert len(expected) >= 14
    assert_labels(contexts, expected)
    ours = {t for _, t in PAYLOAD_RULES}
    for (path, kind), label in file_types(contexts, unclaimed).items():
        assert label not in ours, f"{path} ({kind}) is labelled {label} by the module"
