//! Booting an ISO headless in Bochs or QEMU, streaming COM1 to the terminal as
//! it grows and letting a [`Judge`] decide; the emulator is killed once the log
//! has decided or the timeout passes.

use crate::cli::Vmm;
use crate::verdict::{Judge, RunEnd, Verdict, printable};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Guest RAM of every emulated machine.
pub const MEMORY_MIB: u32 = 256;
/// How long a passed run may take to end on its own (magic breakpoint) before
/// the tool ends it.
const PASS_GRACE: Duration = Duration::from_secs(5);
/// How long a failed run may go on printing (the rest of an exception or VM
/// report) before the tool ends it.
const FAIL_GRACE: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(50);
/// GRUB prints this when it starts the menu entry.
const GRUB_BOOTING: &str = "Booting `Cordon'";

/// Files of one boot.
#[derive(Debug)]
pub struct Machine<'a> {
    pub vmm: Vmm,
    pub iso: &'a Path,
    pub cpus: u32,
    /// Directory for the emulator's configuration and logs.
    pub work_dir: &'a Path,
}

/// What a boot produced besides the verdict.
#[derive(Debug)]
pub struct BootReport {
    pub verdict: Verdict,
    /// From emulator start to GRUB starting the entry (BIOS + GRUB).
    pub firmware_time: Option<Duration>,
    pub total_time: Duration,
}

/// The Bochs configuration: a VMX-capable CPU model, COM1 into `serial`, the
/// magic breakpoint on, a headless display that waits for nobody.
pub fn bochs_config(iso: &Path, serial: &Path, log: &Path, cpus: u32) -> String {
    format!(
        "megs: {MEMORY_MIB}\n\
         cpu: model=corei7_skylake_x, count={cpus}, ips=50000000, reset_on_triple_fault=0\n\
         romimage: file=$BXSHARE/BIOS-bochs-latest\n\
         vgaromimage: file=$BXSHARE/VGABIOS-lgpl-latest\n\
         ata0-master: type=cdrom, path=\"{iso}\", status=inserted\n\
         boot: cdrom\n\
         display_library: rfb, options=\"timeout=0\"\n\
         com1: enabled=1, mode=file, dev=\"{serial}\"\n\
         magic_break: enabled=1\n\
         port_e9_hack: enabled=1\n\
         clock: sync=none, time0=local\n\
         sound: waveoutdrv=dummy, waveindrv=dummy, midioutdrv=dummy\n\
         speaker: enabled=0\n\
         log: \"{log}\"\n\
         panic: action=fatal\n\
         error: action=report\n\
         info: action=ignore\n\
         debug: action=ignore\n",
        iso = iso.display(),
        serial = serial.display(),
        log = log.display(),
    )
}

/// Boots `machine` and judges the serial log; `echo` gets each serial line.
pub fn boot(
    machine: &Machine,
    mut judge: Judge,
    timeout: Duration,
    echo: &mut dyn Write,
) -> Result<BootReport, String> {
    fs::create_dir_all(machine.work_dir)
        .map_err(|error| format!("cannot create {}: {error}", machine.work_dir.display()))?;
    let serial = machine.work_dir.join("serial.log");
    File::create(&serial)
        .map_err(|error| format!("cannot create {}: {error}", serial.display()))?;
    let mut child = spawn(machine, &serial)?;
    let started = Instant::now();
    let mut reader = SerialReader::new(&serial)?;
    let mut firmware_time = None;
    let mut decided: Option<(Verdict, Instant)> = None;
    let verdict = loop {
        let exited = child
            .try_wait()
            .map_err(|error| format!("cannot wait for the emulator: {error}"))?;
        for line in reader.new_lines()? {
            let _ = writeln!(echo, "  | {line}");
            if firmware_time.is_none() && line.contains(GRUB_BOOTING) {
                firmware_time = Some(started.elapsed());
            }
            if decided.is_none() {
                decided = judge
                    .observe(&line)
                    .map(|verdict| (verdict, Instant::now()));
            }
        }
        match (&decided, exited) {
            (Some((verdict, _)), Some(_)) => break verdict.clone(),
            (Some((Verdict::Fail(_), at)), None) if at.elapsed() > FAIL_GRACE => {
                break stop(&mut child, decided.take());
            }
            (Some((Verdict::Pass(_), at)), None) if at.elapsed() > PASS_GRACE => {
                break stop(&mut child, decided.take());
            }
            (None, Some(status)) => {
                let mut last_lines = reader.new_lines()?;
                last_lines.extend(reader.rest());
                for line in last_lines {
                    let _ = writeln!(echo, "  | {line}");
                    if decided.is_none() {
                        decided = judge
                            .observe(&line)
                            .map(|verdict| (verdict, Instant::now()));
                    }
                }
                break match decided.take() {
                    Some((verdict, _)) => verdict,
                    None => judge.conclude(RunEnd::EmulatorExited(status.code())),
                };
            }
            _ => {}
        }
        if decided.is_none()
            && let Some(trouble) = emulator_trouble(&output_log(machine))
        {
            decided = Some((
                Verdict::Fail(format!("emulator: {trouble}")),
                Instant::now(),
            ));
            continue;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break judge.conclude(RunEnd::TimedOut(timeout));
        }
        std::thread::sleep(POLL);
    };
    // Whatever arrived after the verdict (the rest of a multi-line report).
    for line in reader.new_lines()?.into_iter().chain(reader.rest()) {
        let _ = writeln!(echo, "  | {line}");
    }
    Ok(BootReport {
        verdict,
        firmware_time,
        total_time: started.elapsed(),
    })
}

/// Ends the emulator and returns the verdict that was reached.
fn stop(child: &mut Child, decided: Option<(Verdict, Instant)>) -> Verdict {
    let _ = child.kill();
    let _ = child.wait();
    decided.map_or_else(
        || Verdict::Fail("no verdict".into()),
        |(verdict, _)| verdict,
    )
}

fn output_log(machine: &Machine) -> PathBuf {
    machine.work_dir.join(match machine.vmm {
        Vmm::Bochs => "bochs.out",
        Vmm::Qemu => "qemu.out",
    })
}

fn spawn(machine: &Machine, serial: &Path) -> Result<Child, String> {
    let output_log = output_log(machine);
    let output = File::create(&output_log)
        .map_err(|error| format!("cannot create {}: {error}", output_log.display()))?;
    let errors = output
        .try_clone()
        .map_err(|error| format!("cannot duplicate a file handle: {error}"))?;
    let mut command = match machine.vmm {
        Vmm::Bochs => bochs_command(machine, serial)?,
        Vmm::Qemu => qemu_command(machine, serial),
    };
    command.stdin(Stdio::null()).stdout(output).stderr(errors);
    command
        .spawn()
        .map_err(|error| format!("cannot start {:?}: {error}", command.get_program()))
}

fn bochs_command(machine: &Machine, serial: &Path) -> Result<Command, String> {
    let config_path = machine.work_dir.join("bochsrc");
    let script_path = machine.work_dir.join("bochs.rc");
    let log = machine.work_dir.join("bochs.log");
    fs::write(
        &config_path,
        bochs_config(machine.iso, serial, &log, machine.cpus),
    )
    .map_err(|error| format!("cannot write {}: {error}", config_path.display()))?;
    // The debugger stops before the first instruction: continue; the magic
    // breakpoint drops back into it, and `quit` ends Bochs with status 0.
    fs::write(&script_path, "continue\nquit\n")
        .map_err(|error| format!("cannot write {}: {error}", script_path.display()))?;
    let mut command = Command::new("bochs");
    command
        .arg("-q")
        .arg("-f")
        .arg(&config_path)
        .arg("-rc")
        .arg(&script_path);
    if std::env::var_os("BXSHARE").is_none() {
        command.env("BXSHARE", "/usr/share/bochs");
    }
    Ok(command)
}

/// Whether QEMU can use KVM here: /dev/kvm opens and the CPU shows hardware
/// virtualisation (some sandboxes offer a /dev/kvm that cannot run real code).
pub fn kvm_usable() -> bool {
    let device = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    device && (cpu_has_flag("vmx") || cpu_has_flag("svm"))
}

/// Whether QEMU with KVM would give Cordon VMX (an Intel host with nesting).
pub fn nested_vmx_available() -> bool {
    kvm_usable() && cpu_has_flag("vmx")
}

fn cpu_has_flag(flag: &str) -> bool {
    fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| {
        info.lines()
            .filter(|line| line.starts_with("flags"))
            .any(|line| line.split_whitespace().any(|word| word == flag))
    })
}

/// Lines in the emulator's own output that mean the machine is dead even if
/// the process lingers (QEMU pauses after a KVM internal error).
const EMULATOR_FATAL: &[&str] = &["KVM internal error", ">>PANIC<<", "emulation failure"];

/// The first fatal line in the emulator's output log, if any.
fn emulator_trouble(output_log: &Path) -> Option<String> {
    let text = fs::read(output_log).ok()?;
    let text = String::from_utf8_lossy(&text);
    text.lines()
        .find(|line| EMULATOR_FATAL.iter().any(|marker| line.contains(marker)))
        .map(|line| line.trim().to_string())
}

fn qemu_command(machine: &Machine, serial: &Path) -> Command {
    let mut command = Command::new("qemu-system-x86_64");
    if kvm_usable() {
        command.args(["-accel", "kvm", "-cpu", "host"]);
    } else {
        command.args(["-accel", "tcg", "-cpu", "max"]);
    }
    command
        .args([
            "-m",
            &MEMORY_MIB.to_string(),
            "-smp",
            &machine.cpus.to_string(),
        ])
        .arg("-cdrom")
        .arg(machine.iso)
        .args([
            "-boot",
            "d",
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
        ])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()));
    command
}

/// Reads a growing file and hands out its complete lines, cleaned for display.
struct SerialReader {
    file: File,
    pending: Vec<u8>,
}

impl SerialReader {
    fn new(path: &PathBuf) -> Result<SerialReader, String> {
        let file =
            File::open(path).map_err(|error| format!("cannot open {}: {error}", path.display()))?;
        Ok(SerialReader {
            file,
            pending: Vec::new(),
        })
    }

    fn new_lines(&mut self) -> Result<Vec<String>, String> {
        let mut chunk = Vec::new();
        self.file
            .read_to_end(&mut chunk)
            .map_err(|error| format!("cannot read the serial log: {error}"))?;
        self.pending.extend_from_slice(&chunk);
        let mut lines = Vec::new();
        while let Some(end) = self.pending.iter().position(|byte| *byte == b'\n') {
            let raw: Vec<u8> = self.pending.drain(..=end).collect();
            let line = printable(&String::from_utf8_lossy(&raw));
            if !line.trim().is_empty() {
                lines.push(line);
            }
        }
        Ok(lines)
    }

    /// A last line without a newline, if any.
    fn rest(&mut self) -> Option<String> {
        let line = printable(&String::from_utf8_lossy(&std::mem::take(&mut self.pending)));
        (!line.trim().is_empty()).then_some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bochs_config_has_the_essentials() {
        let config = bochs_config(
            Path::new("/x/c.iso"),
            Path::new("/x/serial.log"),
            Path::new("/x/b.log"),
            2,
        );
        for needle in [
            "cpu: model=corei7_skylake_x, count=2",
            "megs: 256",
            "display_library: rfb, options=\"timeout=0\"",
            "com1: enabled=1, mode=file, dev=\"/x/serial.log\"",
            "magic_break: enabled=1",
            "clock: sync=none",
            "boot: cdrom",
            "port_e9_hack: enabled=1",
            "speaker: enabled=0",
        ] {
            assert!(config.contains(needle), "missing {needle}:\n{config}");
        }
    }
}
