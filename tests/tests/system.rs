//! The QEMU system tests. Each boots `tests/images/<name>/tessera.img` (built
//! by `cargo xtask test`) and checks the kernel's and guests' console lines
//! against the output contract:
//!
//! - kernel lines start with `tessera: `, guest lines with `(<domain>) `;
//! - a guest test reports `TEST <name> PASS` or `TEST <name> FAIL <reason>`;
//! - no line may mention a panic.

use std::process::ExitCode;
use std::time::Duration;
use tessera_system_tests::hostdtb::broken_host_dtb;
use tessera_system_tests::image::{corrupt_chunk_digests, corrupt_module};
use tessera_system_tests::linux::with_console;
use tessera_system_tests::{lit, run_main, Context, Failure, Line, Qemu, SystemTest};

/// Bare-metal tests finish in seconds; this is for a slow CI machine.
const WAIT: Duration = Duration::from_secs(60);

fn pass(domain: &str, test: &str) -> String {
    format!(r"\({domain}\) TEST {test} PASS")
}

fn shutdown(domain: &str, how: &str) -> String {
    format!(r"tessera: d\d+ {domain}: shutdown \({how}\)")
}

const ALL_STOPPED: &str = r"tessera: all domains stopped, powering off";

/// One domain runs one guest test, then powers off: the whole board stops.
fn hypercalls(cx: &Context) -> Result<(), Failure> {
    let mut qemu = cx.boot(&cx.config("hypercalls", 2))?;
    qemu.expect(&pass("hypercalls", "hypercalls"), WAIT)?;
    qemu.expect(&shutdown("hypercalls", "poweroff"), WAIT)?;
    qemu.expect(ALL_STOPPED, WAIT)?;
    qemu.wait_exit(WAIT)?;
    Ok(())
}

/// One domain, one guest test, nothing else to check.
fn single(cx: &Context, image: &str, smp: u32, test: &str) -> Result<(), Failure> {
    let mut qemu = cx.boot(&cx.config(image, smp))?;
    qemu.expect(&pass(image, test), WAIT)?;
    Ok(())
}

fn psci(cx: &Context) -> Result<(), Failure> {
    single(cx, "psci", 4, "psci")
}

fn sgi(cx: &Context) -> Result<(), Failure> {
    single(cx, "sgi", 4, "sgi")
}

fn timer(cx: &Context) -> Result<(), Failure> {
    single(cx, "timer", 2, "timer")
}

fn timeslice(cx: &Context) -> Result<(), Failure> {
    single(cx, "timeslice", 2, "timeslice")
}

/// The attacker reads outside its memory and is stopped; its neighbour keeps
/// printing heartbeats after the fault and then passes.
fn isolation(cx: &Context) -> Result<(), Failure> {
    let mut qemu = cx.boot(&cx.config("isolation", 2))?;
    qemu.forbid(
        r"\(attacker\) TEST",
        "the attacker must be stopped before it reports",
    )?;
    qemu.expect(
        r"tessera: d\d+ attacker: stage-2 fault at IPA 0x[0-9a-fA-F]+ ESR 0x[0-9a-fA-F]+; domain stopped",
        WAIT,
    )?;
    qemu.expect_count(r"\(neighbour\) .*HEARTBEAT", 5, WAIT)?;
    qemu.expect(&pass("neighbour", "heartbeat"), WAIT)?;
    Ok(())
}

/// Two 1-vCPU domains run at the same time, on different pCPUs.
fn concurrent(cx: &Context) -> Result<(), Failure> {
    let mut qemu = cx.boot(&cx.config("concurrent", 2))?;
    let lines = qemu.expect_all(
        &[
            r"tessera: d\d+ left: vcpu0 on pcpu\d+",
            r"tessera: d\d+ right: vcpu0 on pcpu\d+",
            &pass("left", "concurrent"),
            &pass("right", "concurrent"),
        ],
        WAIT,
    )?;
    on_different_pcpus(&qemu, ("left", &lines[0]), ("right", &lines[1]))
}

/// Fails unless two `vcpu0 on pcpu<n>` placement lines name different pCPUs.
fn on_different_pcpus(qemu: &Qemu, a: (&str, &Line), b: (&str, &Line)) -> Result<(), Failure> {
    let pcpu = |line: &Line| {
        line.text
            .rsplit("pcpu")
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let (pa, pb) = (pcpu(a.1), pcpu(b.1));
    if pa == pb {
        return Err(qemu.failure(&format!(
            "{} and {} both run on pcpu{pa}; expected different pCPUs",
            a.0, b.0
        )));
    }
    Ok(())
}

/// `-cpu max`: guests see only sanitised ID registers and still work.
fn cpu_max(cx: &Context) -> Result<(), Failure> {
    let mut qemu = cx.boot(&cx.config("cpu-max", 2).cpu("max"))?;
    qemu.expect_all(
        &[&pass("idregs", "idregs"), &pass("hypercalls", "hypercalls")],
        WAIT,
    )?;
    Ok(())
}

/// A crashing domain is stopped with `crash`; a rebooting one restarts.
fn shutdown_modes(cx: &Context) -> Result<(), Failure> {
    let mut qemu = cx.boot(&cx.config("shutdown-modes", 2))?;
    qemu.expect(r"\(rebooter\) .*REBOOT-START", WAIT)?;
    qemu.expect(&shutdown("rebooter", "reboot"), WAIT)?;
    qemu.expect(r"\(rebooter\) .*REBOOT-START", WAIT)?;
    qemu.wait_seen(&shutdown("crasher", "crash"), WAIT)?;
    Ok(())
}

/// A host DTB whose GIC node lost its `reg`: the kernel says why and halts.
/// (QEMU rewrites `/psci` and `/chosen` in a `-dtb` blob, so the damage is
/// done to a node it leaves alone.)
fn bad_host_dtb(cx: &Context) -> Result<(), Failure> {
    let config = cx.config("hypercalls", 2);
    let dtb = cx.scratch().join("broken.dtb");
    broken_host_dtb(&config, "/intc@8000000", "reg", &dtb)?;
    let config = config.args(["-dtb".to_string(), dtb.display().to_string()]);
    let mut qemu = cx.boot(&config)?;
    let line = qemu.expect(r"tessera: bad host device tree: ", WAIT)?;
    if !(line.text.contains("/intc@8000000") && line.text.contains("reg")) {
        return Err(qemu.failure(&format!(
            "the message must name /intc@8000000 and reg: {}",
            line.text
        )));
    }
    // Give a panic (or a domain starting anyway) a moment to show.
    qemu.settle(Duration::from_secs(2))?;
    qemu.assert_absent(r"^\(", "no domain may start on a bad host DTB")?;
    Ok(())
}

/// Copies of a good image, damaged. One byte of its `testguest` module
/// flipped: the kernel checks a payload chunk by chunk as it first copies
/// it into a domain (docs/02, "Lazy RAM"), so the guest is built but never
/// runs an instruction of it: the fill is refused with one line naming the
/// module and the bytes, and the domain stops. Its list of chunk digests
/// damaged instead: the kernel refuses the image at boot and builds
/// nothing.
fn corrupt_module_refused(cx: &Context) -> Result<(), Failure> {
    let good = cx.image("hypercalls");
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| Failure::new(format!("{}: {e}", p.display())))
    };
    let dir = cx.scratch();
    std::fs::create_dir_all(&dir).map_err(|e| Failure::new(format!("{}: {e}", dir.display())))?;
    let boot_damaged = |bytes: &[u8], file: &str| {
        let bad = dir.join(file);
        std::fs::write(&bad, bytes).map_err(|e| Failure::new(format!("{}: {e}", bad.display())))?;
        let mut config = cx.config("hypercalls", 2);
        config.kernel = bad;
        cx.boot(&config)
    };

    let mut bytes = read(&good)?;
    let index = corrupt_module(&mut bytes, "testguest")?;
    let mut qemu = boot_damaged(&bytes, "corrupt-payload.img")?;
    qemu.expect(
        &format!(
            "^tessera: d\\d+ \\S+: module entry {index} \"testguest\" fails its SHA-256 \
             check at bytes 0x[0-9a-f]+\\.\\.0x[0-9a-f]+; it is not used$"
        ),
        WAIT,
    )?;
    qemu.expect(
        r"^tessera: d\d+ \S+: stage-2 fault at IPA .*; domain stopped$",
        WAIT,
    )?;
    qemu.expect(&lit("tessera: all domains stopped, powering off"), WAIT)?;
    qemu.assert_absent(r"^\(", "no instruction of a corrupt payload may run")?;
    drop(qemu);

    let mut bytes = read(&good)?;
    let index = corrupt_chunk_digests(&mut bytes, "testguest")?;
    let mut qemu = boot_damaged(&bytes, "corrupt-digests.img")?;
    qemu.expect(
        &lit(&format!(
            "tessera: bad unified image: module entry {index} \"testguest\": its chunk digests \
             fail their SHA-256 check; halting"
        )),
        WAIT,
    )?;
    qemu.settle(Duration::from_secs(2))?;
    qemu.assert_absent(r"^\(", "no domain may start from a corrupt image")?;
    qemu.assert_absent(r"vcpu\d+ on pcpu", "no domain may even be built")?;
    Ok(())
}

/// The kernel refuses pins it cannot honour before it builds any domain,
/// with one line naming the domain, even though the image was packed
/// (`cargo xtask build` does not check pins; an image may come from other
/// tools): `tests/images/pins-refused` pins two domains to pCPU 1.
fn pins_refused(cx: &Context) -> Result<(), Failure> {
    let refused = |smp: u32, why: &str| -> Result<(), Failure> {
        let mut qemu = cx.boot(&cx.config("pins-refused", smp))?;
        qemu.expect(
            &lit(&format!("tessera: cannot place vCPUs: {why}; halting")),
            WAIT,
        )?;
        qemu.settle(Duration::from_secs(2))?;
        qemu.assert_absent(r"^\(", "no domain may start")?;
        qemu.assert_absent(r"vcpu\d+ on pcpu", "no domain may even be built")?;
        Ok(())
    };
    refused(
        2,
        "d2 \"b\": tessera,pcpus pins a vCPU to pCPU 1, which d1 \"a\" already owns (a \
         pinned domain has its pCPUs to itself)",
    )?;
    refused(
        1,
        "d1 \"a\": tessera,pcpus pins a vCPU to pCPU 1, but the board has only pCPU 0",
    )
}

/// `tests/images/pins-no-room`: a owns pCPU 0, b owns pCPU 1, c is not
/// pinned. On two pCPUs nothing is left for c and the image is refused;
/// on three, c runs on pCPU 2, the only one nobody owns, and all pass.
fn pins_no_room(cx: &Context) -> Result<(), Failure> {
    let mut qemu = cx.boot(&cx.config("pins-no-room", 2))?;
    qemu.expect(
        &lit(
            "tessera: cannot place vCPUs: d3 \"c\" is not pinned, but pinned domains own all 2 \
             pCPUs: none is left for it (tessera,pcpus); halting",
        ),
        WAIT,
    )?;
    qemu.settle(Duration::from_secs(2))?;
    qemu.assert_absent(r"^\(", "no domain may start")?;
    drop(qemu);
    let mut qemu = cx.boot(&cx.config("pins-no-room", 3))?;
    qemu.expect_all(
        &[
            r"tessera: pcpu0 belongs to d1 a \(tessera,pcpus\)",
            r"tessera: pcpu1 belongs to d2 b \(tessera,pcpus\)",
            r"tessera: d1 a: vcpu0 on pcpu0$",
            r"tessera: d2 b: vcpu0 on pcpu1$",
            r"tessera: d3 c: vcpu0 on pcpu2$",
            &pass("a", "hypercalls"),
            &pass("b", "hypercalls"),
            &pass("c", "hypercalls"),
        ],
        WAIT,
    )?;
    qemu.expect(ALL_STOPPED, WAIT)?;
    Ok(())
}

/// `images/dom0less-example`, a tree written as Xen's ImageBuilder writes
/// one (modules named only by `reg`, `vpl011` with no device model, the
/// domains in the reverse order libfdt leaves them), boots unchanged: its
/// modules come from the image's `modules.map`, domU1 passes its test and
/// powers off, domU0 ticks on.
fn dom0less_example(cx: &Context) -> Result<(), Failure> {
    let mut qemu = cx.boot(&cx.config("dom0less-example", 2))?;
    qemu.forbid(r"stage-2 fault", "no domain may fault")?;
    qemu.expect_all(
        &[
            r"tessera: d1 domU1: vcpu0 on pcpu0$",
            r"tessera: d2 domU0: vcpu0 on pcpu1$",
            &pass("domU1", "hypercalls"),
            &shutdown("domU1", "poweroff"),
        ],
        WAIT,
    )?;
    qemu.expect_count(r"^\(domU0\) TICKER \d+ ", 2, WAIT)?;
    Ok(())
}

/// What `console_input` types: longer than the emulated UART's 32-byte
/// receive FIFO, so the device model must refill it as the guest reads.
const TYPED: &str = "the quick brown fox jumps over the lazy dog, 0123456789 times, \
                     and then some more to go past two FIFOs";

/// Keyboard input by interrupt, end to end (`tests/images/console-input`):
/// the guest's prompt reaches the console with no input after it (the
/// device model forwards a partial line before it sleeps); a line typed
/// only once the prompt shows comes back as the guest's echo and its
/// report; then, while the guest idles for 1.5 s, the device model sleeps
/// through at least a second of it. Nothing here waits for a time to
/// pass: with polled input the device model would wake every 20 ms and
/// never report such a sleep.
fn console_input(cx: &Context) -> Result<(), Failure> {
    let (config, mut keys) = with_console(cx.config("console-input", 2), &cx.scratch())?;
    let mut qemu = cx.boot(&config)?;
    qemu.forbid(r"is not being read", "no input may be dropped")?;
    qemu.expect(r"console input goes to d2 typist", WAIT)?;
    qemu.expect_partial(r"^\(typist\) type> $", WAIT)?;
    keys.type_line(TYPED)?;
    qemu.expect(&format!(r"^\(typist\) type> {}$", lit(TYPED)), WAIT)?;
    qemu.expect(
        &format!(r"^\(typist\) read {} bytes: {}$", TYPED.len(), lit(TYPED)),
        WAIT,
    )?;
    let woke = qemu.expect(r"^\(devmodel\) devmodel: woke after (\d+) ms asleep$", WAIT)?;
    let ms: u64 = woke
        .text
        .rsplit("after ")
        .next()
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if ms < 1000 {
        return Err(qemu.failure(&format!("the device model slept only {ms} ms")));
    }
    qemu.expect(r"^\(typist\) idled 1500 ms$", WAIT)?;
    qemu.expect(&pass("typist", "console-input"), WAIT)?;
    Ok(())
}

/// One domain exercises every event-channel sub-command on its own ports:
/// IPI, VIRQ and loopback delivery through the upcall, masking, status,
/// close and reset, and every error path.
fn evtchn_local(cx: &Context) -> Result<(), Failure> {
    single(cx, "evtchn-local", 2, "evtchn-local")
}

/// Two domains on two pCPUs exchange 400 messages of varied size over two
/// rings in a static shared region, notified over a static event channel;
/// both check every byte, then both power off.
fn pingpong(cx: &Context) -> Result<(), Failure> {
    let mut qemu = cx.boot(&cx.config("pingpong", 2))?;
    let lines = qemu.expect_all(
        &[
            r"tessera: d1 ping: vcpu0 on pcpu\d+",
            r"tessera: d2 pong: vcpu0 on pcpu\d+",
            &pass("ping", "pingpong"),
            &pass("pong", "pingpong"),
        ],
        WAIT,
    )?;
    on_different_pcpus(&qemu, ("ping", &lines[0]), ("pong", &lines[1]))?;
    qemu.expect(ALL_STOPPED, WAIT)?;
    Ok(())
}

/// The default policy lets a domain builder open a channel for a guest but
/// not the guest bind to it or open one towards the builder: both calls are
/// refused with -EACCES and logged; sends on ports the guest does not own
/// are -EINVAL (checked in the guest).
fn evtchn_deny(cx: &Context) -> Result<(), Failure> {
    let mut qemu = cx.boot(&cx.config("evtchn-deny", 2))?;
    let denied = |perm: &str| {
        format!(
            r"tessera: avc: denied \{{ {perm} \}} for source=system_u:system_r:domU_t target=system_u:system_r:domB_t class=event"
        )
    };
    let guest_to_guest = |perm: &str| {
        format!(
            r"tessera: avc: denied \{{ {perm} \}} for source=system_u:system_r:domU_t target=system_u:system_r:domU_t class=event"
        )
    };
    qemu.expect_all(
        &[
            &pass("builder", "evtchn-offer"),
            &pass("guest", "evtchn-deny"),
            &pass("guest2", "evtchn-deny"),
            &denied("create"),
            &denied("bind"),
            &guest_to_guest("create"),
            &guest_to_guest("bind"),
        ],
        WAIT,
    )?;
    Ok(())
}

/// Grant tables under the default policy: a service grants pages to a
/// guest, which maps them writable and read-only, writes through them,
/// unmaps, maps a batch that needs a continuation, copies both ways and is
/// refused every bad request (checked in the guests: the granter sees the
/// in-use flags, a refused revoke while mapped and a successful one after,
/// and the guest's mapping released when it powers off). Mapping, copying
/// and querying towards the wrong domains is denied and logged.
fn grant_share(cx: &Context) -> Result<(), Failure> {
    let mut qemu = cx.boot(&cx.config("grant-share", 2))?;
    qemu.forbid(r"TEST grants FAIL", "a grant test failed")?;
    qemu.forbid(r"stage-2 fault", "no domain may fault")?;
    let denied = |perm: &str, target: &str| {
        format!(
            r"tessera: avc: denied \{{ {perm} \}} for source=system_u:system_r:domU_t target=system_u:system_r:{target} class=grant"
        )
    };
    qemu.expect_all(
        &[
            &pass("granter", "grants"),
            &pass("guest", "grants"),
            &pass("peer", "grants"),
            &denied("map_write", "domU_t"),
            &denied("map_read", "domU_t"),
            &denied("copy", "domU_t"),
            &denied("query", "devmodel_t"),
        ],
        WAIT,
    )?;
    qemu.expect(ALL_STOPPED, WAIT)?;
    Ok(())
}

/// A granter reboots while a guest maps its page: the kernel unmaps it
/// first, the restarted granter finds fresh grant frames, and the guest
/// (whose old handle is gone) maps the new page.
fn grant_restart(cx: &Context) -> Result<(), Failure> {
    let mut qemu = cx.boot(&cx.config("grant-restart", 2))?;
    qemu.forbid(r"TEST grants FAIL", "a grant test failed")?;
    qemu.forbid(r"stage-2 fault", "no domain may fault")?;
    qemu.expect(&shutdown("granter", "reboot"), WAIT)?;
    qemu.expect(r"tessera: d1 granter: restarting \(generation 1\)", WAIT)?;
    qemu.expect_all(
        &[&pass("guest", "grants"), &pass("granter", "grants")],
        WAIT,
    )?;
    qemu.expect(ALL_STOPPED, WAIT)?;
    Ok(())
}

/// A builder (domB_t) builds a guest with the domain-control hypercalls
/// from the image's `testguest` module, wires it to a service domain it
/// also creates, starts it and, once it has powered off, destroys both and
/// builds in the freed slot again; then it pauses, resumes and destroys a
/// running ticker, and resets in place a domain that asks to reboot and
/// starts it again. Every call is also tried wrongly (checked in the
/// builder). The policy's refusals are logged.
fn domctl(cx: &Context) -> Result<(), Failure> {
    let mut qemu = cx.boot(&cx.config("domctl", 2))?;
    qemu.forbid(r"stage-2 fault", "no domain may fault")?;
    let denied = |perm: &str, class: &str| {
        format!(
            r"tessera: avc: denied \{{ {perm} \}} for source=system_u:system_r:domU_t target=system_u:system_r:domB_t class={class}"
        )
    };
    qemu.expect_all(
        &[
            r"tessera: d2 child: created by d1 builder as system_u:system_r:domU_t",
            r"tessera: d2 child: vcpu0 on pcpu\d+",
            &denied("map_read", "grant"),
            &denied("bind", "event"),
            &pass("child", "built"),
            &shutdown("child", "poweroff"),
            r"tessera: d2 child: destroyed",
            r"tessera: d2 again: created by d1 builder",
        ],
        WAIT,
    )?;
    // It ticks before the pause; the tick due while it is paused (1.5 s)
    // comes at least a tenth of a second late; and it ticks on afterwards.
    qemu.expect(r"\(ticker\) TICKER 1 ", WAIT)?;
    qemu.expect(r"\(ticker\) TICKER \d+ late_max_us=\d{6,}$", WAIT)?;
    qemu.expect(r"\(ticker\) TICKER \d+ ", WAIT)?;
    qemu.expect(r"tessera: d2 ticker: destroyed", WAIT)?;
    // A domain that asks to reboot is reset in place and started again.
    qemu.expect_all(
        &[
            r"\(rebooter\) .*REBOOT-START",
            &shutdown("rebooter", "reboot"),
            r"tessera: d2 rebooter: reset in place by d1 builder \(generation 1\)",
        ],
        WAIT,
    )?;
    qemu.expect_all(
        &[
            r"\(rebooter\) .*REBOOT-START",
            &shutdown("rebooter", "reboot"),
            r"tessera: d2 rebooter: destroyed",
            &pass("builder", "domctl-build"),
        ],
        WAIT,
    )?;
    qemu.expect(ALL_STOPPED, WAIT)?;
    Ok(())
}

/// A builder whose policy lacks `domain create` is refused, and the kernel
/// logs the denial.
fn domctl_deny(cx: &Context) -> Result<(), Failure> {
    let mut qemu = cx.boot(&cx.config("domctl-deny", 2))?;
    qemu.expect_all(
        &[
            r"tessera: avc: denied \{ create \} for source=system_u:system_r:domB_t target=system_u:system_r:domU_t class=domain",
            &pass("builder", "domctl-deny"),
        ],
        WAIT,
    )?;
    qemu.assert_absent(r"created by", "no domain may be created")?;
    Ok(())
}

/// domB's measurement line for domain `d<id> <name>` (no ramdisk).
fn measured(id: u16, name: &str) -> String {
    format!(
        r"\(domb\) measured d{id} {name}: kernel sha256=[0-9a-f]{{64}} dtb sha256=[0-9a-f]{{64}} label sha256=[0-9a-f]{{64}}$"
    )
}

/// A line domB prints about its work.
fn domb(what: &str) -> String {
    format!(r"\(domb\) domb: {what}")
}

/// Hyperlaunch: the kernel builds only the boot domain, which builds the
/// two pingpong guests from the description -- pong, the service, before
/// ping -- measures each, lends them a shared region from its own RAM and
/// binds their channel. Both pass, and domB, with nothing left to
/// supervise, powers the board off.
fn hyperlaunch(cx: &Context) -> Result<(), Failure> {
    let mut qemu = cx.boot(&cx.config("hyperlaunch", 2))?;
    qemu.forbid(r"stage-2 fault", "no domain may fault")?;
    qemu.forbid(r"cannot build", "domB must build every domain")?;
    qemu.expect(
        r"tessera: hyperlaunch: d1 domb is the boot domain; it builds the other 2 domain\(s\)",
        WAIT,
    )?;
    qemu.expect(
        r"tessera: d3 pong: created by d1 domb as system_u:system_r:pong_t",
        WAIT,
    )?;
    qemu.expect(&measured(3, "pong"), WAIT)?;
    qemu.expect(
        r"tessera: d2 ping: created by d1 domb as system_u:system_r:ping_t",
        WAIT,
    )?;
    qemu.expect(&measured(2, "ping"), WAIT)?;
    // The guests run as soon as they are unpaused, so they may pass before
    // domB reports its build finished.
    qemu.expect_all(
        &[
            &domb("built 2 of 2 domains; supervising"),
            &pass("ping", "pingpong"),
            &pass("pong", "pingpong"),
        ],
        WAIT,
    )?;
    qemu.expect(&domb("no domain left to supervise; powering off"), WAIT)?;
    qemu.expect(ALL_STOPPED, WAIT)?;
    qemu.wait_exit(WAIT)?;
    Ok(())
}

/// Hyperlaunch restart: the crasher (`on-crash = "restart"`) crashes on
/// purpose; domB destroys it, waits out the back-off and rebuilds it with
/// the same id as generation 1 (measured again). Binding its channel again
/// raises the peer's port, so the peer sees "peer restarted" rather than
/// hanging; the rebuilt crasher passes, then the peer.
fn hyperlaunch_restart(cx: &Context) -> Result<(), Failure> {
    let mut qemu = cx.boot(&cx.config("hyperlaunch-restart", 2))?;
    qemu.forbid(r"TEST restart-\S+ FAIL", "a restart test failed")?;
    qemu.forbid(r"cannot build", "domB must build every domain")?;
    qemu.expect(&measured(2, "peer"), WAIT)?;
    qemu.expect(&measured(3, "crasher"), WAIT)?;
    qemu.expect(r"\(crasher\) restart: run 1$", WAIT)?;
    qemu.expect(&shutdown("crasher", "crash"), WAIT)?;
    qemu.expect(&domb("d3 crasher: crashed"), WAIT)?;
    qemu.expect(
        &domb(r#"d3 crasher: restart in 200 ms \(on-crash = "restart"\)"#),
        WAIT,
    )?;
    qemu.expect(r"tessera: d3 crasher: destroyed", WAIT)?;
    qemu.expect(
        r"tessera: d3 crasher: created by d1 domb as system_u:system_r:crasher_t",
        WAIT,
    )?;
    qemu.expect_all(
        &[
            &measured(3, "crasher"),
            &domb("d3 crasher: rebuilt as generation 1"),
            &domb("d2: told that its peer d3 crasher restarted"),
            r"\(peer\) restart-peer: peer restarted: port 9 is bound to d3 again",
            // One set: the three domains print concurrently, so domB's notice
            // may come after either guest has already passed.
            r"\(crasher\) restart: run 2$",
            &pass("crasher", "restart-crasher"),
            &pass("peer", "restart-peer"),
        ],
        WAIT,
    )?;
    qemu.expect(ALL_STOPPED, WAIT)?;
    qemu.wait_exit(WAIT)?;
    Ok(())
}

/// Hyperlaunch without `domain create` for domB: the kernel refuses and
/// logs it, domB says which domain it cannot build and why, and with
/// nothing to supervise it powers off; no domain is ever created.
fn hyperlaunch_deny(cx: &Context) -> Result<(), Failure> {
    let mut qemu = cx.boot(&cx.config("hyperlaunch-deny", 2))?;
    qemu.expect_all(
        &[
            r"tessera: avc: denied \{ create \} for source=system_u:system_r:domB_t target=system_u:system_r:domU_t class=domain",
            &domb(r"cannot build d2 guest: create: -Eacces\(13\)"),
        ],
        WAIT,
    )?;
    qemu.expect(&domb("built 0 of 1 domains; supervising"), WAIT)?;
    qemu.expect(&domb("no domain left to supervise; powering off"), WAIT)?;
    qemu.expect(ALL_STOPPED, WAIT)?;
    qemu.wait_exit(WAIT)?;
    qemu.assert_absent(r"created by", "no domain may be created")?;
    qemu.assert_absent(r"^\(guest\)", "the guest must never run")?;
    Ok(())
}

/// Hyperlaunch reboot: a guest whose on-crash is reboot crashes, so domB
/// resets the system; for the boot domain the kernel passes PSCI
/// SYSTEM_RESET to firmware (QEMU runs with -no-reboot and exits).
fn hyperlaunch_reboot(cx: &Context) -> Result<(), Failure> {
    let config = cx.config("hyperlaunch-reboot", 2).args(["-no-reboot"]);
    let mut qemu = cx.boot(&config)?;
    qemu.expect(&measured(2, "crasher"), WAIT)?;
    qemu.expect(&shutdown("crasher", "crash"), WAIT)?;
    qemu.expect(
        &domb(r#"d2 crasher: on-crash = "reboot": resetting the system"#),
        WAIT,
    )?;
    qemu.expect(r"tessera: d1 domb: system reset$", WAIT)?;
    qemu.wait_exit(WAIT)?;
    qemu.assert_absent(ALL_STOPPED, "a reset is not a power-off")?;
    Ok(())
}

/// Hyperlaunch reboot in place (`tests/images/hyperlaunch-reboot-in-place`):
/// two guests ask to reboot at every boot. domB resets `inplace` in place
/// (`ResetDomain`) and starts it again, generation after generation, with
/// no rebuild; the policy does not let it reset `rebuilt`, so the kernel
/// refuses (and logs the denial) and domB destroys and rebuilds that one.
fn hyperlaunch_reboot_in_place(cx: &Context) -> Result<(), Failure> {
    let mut qemu = cx.boot(&cx.config("hyperlaunch-reboot-in-place", 2))?;
    qemu.forbid(r"stage-2 fault", "no domain may fault")?;
    qemu.forbid(
        r"d2 inplace: (destroyed|rebuilt as generation|cannot reboot in place)",
        "inplace is reset in place, never rebuilt",
    )?;
    // Both guests reboot at once and again at every boot, so their lines
    // interleave: one set.
    let [in_place_1, in_place_2] = [1, 2].map(|generation| {
        [
            format!(r"tessera: d2 inplace: reset in place by d1 domb \(generation {generation}\)"),
            domb(&format!(
                "d2 inplace: rebooted in place as generation {generation}$"
            )),
        ]
    });
    let mut patterns: Vec<String> = vec![
        measured(2, "inplace"),
        measured(3, "rebuilt"),
        shutdown("inplace", "reboot"),
        domb("d2 inplace: asked to reboot"),
        r"tessera: avc: denied \{ reset \} for source=system_u:system_r:domB_t target=system_u:system_r:norest_t class=domain".into(),
        domb(r"d3 rebuilt: cannot reboot in place: reset in place: -Eacces\(13\); rebuilding it"),
        r"tessera: d3 rebuilt: destroyed".into(),
        domb("d3 rebuilt: rebuilt as generation 1$"),
    ];
    patterns.extend(in_place_1);
    patterns.extend(in_place_2);
    let patterns: Vec<&str> = patterns.iter().map(String::as_str).collect();
    qemu.expect_all(&patterns, WAIT)?;
    qemu.expect(r"^\(rebuilt\) .*REBOOT-START", WAIT)?;
    Ok(())
}

/// The line the kernel logs when it holds a served domain.
fn waits_for(domain: &str, id: u16, server: &str, server_id: u16) -> String {
    format!(
        r"tessera: d{id} {domain}: waits for its device model d{server_id} {server} before it runs"
    )
}

/// The line the kernel logs when a held domain's device model is ready.
fn released(domain: &str, id: u16) -> String {
    format!(r"tessera: d{id} {domain}: its device model is ready; starting")
}

/// What a `test=uart-first` guest prints through its emulated PL011.
fn uart_first(domain: &str) -> [String; 2] {
    [
        format!(r"^\({domain}\) uart-first: these lines went to the PL011 first$"),
        pass(domain, "uart-first"),
    ]
}

/// Dom0less hold (`tests/images/hold`): every domain is unpaused at once,
/// but the guest, whose first act is a write to its emulated PL011, is held
/// until its device model says Ready; its lines come out through the
/// device model and nothing faults. A devmodel_t domain that is not the
/// guest's named device model is refused Register, Ready and MapRange for
/// it with -EPERM.
fn hold(cx: &Context) -> Result<(), Failure> {
    let mut qemu = cx.boot(&cx.config("hold", 2))?;
    qemu.forbid(r"stage-2 fault", "the held guest must not fault")?;
    qemu.forbid(r"TEST \S+ FAIL", "a guest test failed")?;
    qemu.expect(&waits_for("guest", 2, "devmodel", 1), WAIT)?;
    let [line, passed] = uart_first("guest");
    qemu.expect_all(
        &[
            &released("guest", 2),
            r"^\(devmodel\) devmodel: serving d2 guest",
            &line,
            &passed,
            &pass("rogue", "ioreq-rogue"),
        ],
        WAIT,
    )?;
    qemu.expect(&shutdown("guest", "poweroff"), WAIT)?;
    Ok(())
}

/// A device model that domB restarts keeps the guest it serves waiting
/// across each of its crashes (`crash-after=3` kills every generation at
/// the guest's third virtio notification, unanswered), and hands the
/// waiting notification to the next generation; when domB's restart budget
/// is spent, domB destroys the guest, which would otherwise wait for good.
fn hyperlaunch_dm_giveup(cx: &Context) -> Result<(), Failure> {
    let mut qemu = cx.boot(&cx.config("hyperlaunch-dm-giveup", 2))?;
    qemu.forbid(r"stage-2 fault", "the waiting guest must not fault")?;
    qemu.forbid(r"TEST virtio-notify", "the guest never finishes")?;
    qemu.forbid(r"d3 guest: shutdown", "the kernel must not stop the guest")?;
    qemu.forbid(r"d3 guest: its device model is destroyed", "it waits")?;
    for generation in 1..=5 {
        qemu.expect(
            r"^\(devmodel\) devmodel: crash-after=3: crashing on purpose",
            WAIT,
        )?;
        qemu.expect(
            r"d3 guest: its device model d2 devmodel stopped; its device accesses wait for the next generation",
            WAIT,
        )?;
        qemu.expect(
            &domb(&format!("d2 devmodel: rebuilt as generation {generation}$")),
            WAIT,
        )?;
        qemu.expect(
            r"d3 guest: served again by d2 devmodel; waiting device accesses go to it",
            WAIT,
        )?;
    }
    qemu.expect(
        r"^\(devmodel\) devmodel: crash-after=3: crashing on purpose",
        WAIT,
    )?;
    qemu.expect(
        &domb("d2 devmodel: left stopped: crashed again after 5 restarts"),
        WAIT,
    )?;
    qemu.expect(
        &domb("d3 guest: its device model d2 devmodel is not coming back; destroyed"),
        WAIT,
    )?;
    qemu.expect(&domb("no domain left to supervise; powering off"), WAIT)?;
    Ok(())
}

/// A device model whose on-crash is "stop" leaves no one waiting: the
/// guest it served is stopped when domB destroys it, with a line saying
/// why, and domB destroys the guest too.
fn hyperlaunch_dm_stop(cx: &Context) -> Result<(), Failure> {
    let mut qemu = cx.boot(&cx.config("hyperlaunch-dm-stop", 2))?;
    qemu.forbid(r"stage-2 fault", "the guest must not fault")?;
    qemu.forbid(r"TEST virtio-notify", "the guest never finishes")?;
    qemu.forbid(
        r"its device accesses wait",
        "nothing restarts the device model",
    )?;
    qemu.expect(
        r"^\(devmodel\) devmodel: crash-after=3: crashing on purpose",
        WAIT,
    )?;
    qemu.expect(&domb("d2 devmodel: left stopped: on-crash is stop"), WAIT)?;
    qemu.expect(r"d3 guest: its device model is destroyed", WAIT)?;
    qemu.expect(
        &domb("d3 guest: its device model d2 devmodel is not coming back; destroyed"),
        WAIT,
    )?;
    qemu.expect(&domb("no domain left to supervise; powering off"), WAIT)?;
    Ok(())
}

/// Hyperlaunch hold (`tests/images/hyperlaunch-hold`): domB builds the
/// device model and the guest it serves (writing the device model's
/// /tessera-ioreq node and naming it in the guest's CreateDomain), then
/// starts them in boot order; the kernel holds the guest until the device
/// model is ready, so its first-instruction PL011 write is served.
fn hyperlaunch_hold(cx: &Context) -> Result<(), Failure> {
    let mut qemu = cx.boot(&cx.config("hyperlaunch-hold", 2))?;
    qemu.forbid(r"stage-2 fault", "the held guest must not fault")?;
    qemu.forbid(r"cannot (build|serve|start)", "everything must be built")?;
    qemu.forbid(r"TEST \S+ FAIL", "a guest test failed")?;
    qemu.expect(&measured(2, "devmodel"), WAIT)?;
    qemu.expect(&measured(3, "guest"), WAIT)?;
    let [line, passed] = uart_first("guest");
    qemu.expect_all(
        &[
            &domb("built 2 of 2 domains; supervising"),
            r"^\(devmodel\) devmodel: serving d3 guest",
            &line,
            &passed,
        ],
        WAIT,
    )?;
    qemu.expect(&domb("d3 guest: powered off"), WAIT)?;
    // domB starts the device model, then the guest: the guest is held
    // unless the device model was ready even before domB's next call (a
    // busy host can stall domB's vCPU that long). Either is right, but a
    // hold must end in a start. (The dom0less `hold` test always holds.)
    let seen = |pattern: &str| {
        let re = regex::Regex::new(pattern).expect("a valid pattern");
        qemu.lines().iter().any(|l| re.is_match(&l.text))
    };
    if seen(&waits_for("guest", 3, "devmodel", 2)) && !seen(&released("guest", 3)) {
        return Err(qemu.failure("the guest was held but never released"));
    }
    Ok(())
}

/// Hyperlaunch pins (`tests/images/hyperlaunch-pins`: a and b both pinned
/// to pCPU 1). On two pCPUs a lands on pCPU 1 and passes, and domB reports
/// that b's pin is taken; on one pCPU domB reports that neither pin can be
/// honoured. The kernel halts on neither: the pins are domB's to ask for.
fn hyperlaunch_pins(cx: &Context) -> Result<(), Failure> {
    let refusal = |name: &str, id: u16, why: &str, errno: &str| {
        domb(&lit(&format!(
            "cannot build d{id} {name}: create: tessera,pcpus = <1> cannot be honoured: {why} ({errno})"
        )))
    };
    let mut qemu = cx.boot(&cx.config("hyperlaunch-pins", 2))?;
    qemu.forbid(r"halting", "the kernel must not refuse the image")?;
    qemu.expect_all(
        &[
            r"tessera: pcpu1 is kept for d2 a \(tessera,pcpus\)",
            r"tessera: d1 domb: vcpu0 on pcpu0$",
            r"tessera: d2 a: vcpu0 on pcpu1$",
            r"tessera: pcpu1 belongs to d2 a \(tessera,pcpus\)",
            &refusal(
                "b",
                3,
                "another domain's vCPU runs on one of them",
                "-Ebusy(16)",
            ),
            &pass("a", "hypercalls"),
        ],
        WAIT,
    )?;
    qemu.expect(ALL_STOPPED, WAIT)?;
    drop(qemu);
    let mut qemu = cx.boot(&cx.config("hyperlaunch-pins", 1))?;
    qemu.forbid(r"halting", "the kernel must not refuse the image")?;
    qemu.expect_all(
        &[
            &refusal("a", 2, "the board has no such pCPU", "-Enxio(6)"),
            &refusal("b", 3, "the board has no such pCPU", "-Enxio(6)"),
            &domb("built 0 of 2 domains; supervising"),
        ],
        WAIT,
    )?;
    qemu.expect(ALL_STOPPED, WAIT)?;
    qemu.assert_absent(r"created by", "no pinned domain may be created")?;
    Ok(())
}

const fn test(
    name: &'static str,
    secs: u64,
    run: fn(&Context) -> Result<(), Failure>,
) -> SystemTest {
    SystemTest {
        name,
        timeout: Duration::from_secs(secs),
        run,
    }
}

const TESTS: &[SystemTest] = &[
    test("hypercalls", 90, hypercalls),
    test("psci", 90, psci),
    test("sgi", 90, sgi),
    test("timer", 90, timer),
    test("isolation", 90, isolation),
    test("concurrent", 90, concurrent),
    test("timeslice", 120, timeslice),
    test("cpu-max", 120, cpu_max),
    test("shutdown-modes", 90, shutdown_modes),
    test("bad-host-dtb", 90, bad_host_dtb),
    test("corrupt-module", 90, corrupt_module_refused),
    test("pins-refused", 90, pins_refused),
    test("pins-no-room", 90, pins_no_room),
    test("dom0less-example", 90, dom0less_example),
    test("console-input", 120, console_input),
    test("evtchn-local", 90, evtchn_local),
    test("pingpong", 120, pingpong),
    test("evtchn-deny", 90, evtchn_deny),
    test("grant-share", 90, grant_share),
    test("grant-restart", 90, grant_restart),
    test("domctl", 120, domctl),
    test("domctl-deny", 90, domctl_deny),
    test("hyperlaunch", 120, hyperlaunch),
    test("hyperlaunch-restart", 120, hyperlaunch_restart),
    test("hyperlaunch-deny", 90, hyperlaunch_deny),
    test("hyperlaunch-reboot", 90, hyperlaunch_reboot),
    test(
        "hyperlaunch-reboot-in-place",
        90,
        hyperlaunch_reboot_in_place,
    ),
    test("hold", 90, hold),
    test("hyperlaunch-hold", 90, hyperlaunch_hold),
    test("hyperlaunch-dm-giveup", 90, hyperlaunch_dm_giveup),
    test("hyperlaunch-dm-stop", 90, hyperlaunch_dm_stop),
    test("hyperlaunch-pins", 120, hyperlaunch_pins),
];

fn main() -> ExitCode {
    run_main(TESTS)
}
