//! The emulated side of a differential case: a CPL-3 guest (64-bit or
//! compatibility mode, as the case says) whose
//! 4-level page tables map the sandbox's code page and data region at the
//! same linear addresses with the same rights (two read/write pages, one
//! read-only page, the guard page not present), so one case's registers and
//! addresses mean the same thing on both sides; GDTR and LDTR point at
//! supervisor pages where segment-load cases mirror the host's descriptors.

use crate::cases::Case;
use abi::{ExitMessage, Segment, SegmentRegister, ValidGroups};
use emulator::Emulator;
use emulator_testkit::drive::{Driven, drive};
use emulator_testkit::native::{
    CODE_BASE, CODE16_IP, DATA_BASE, INSTRUCTION_ADDRESS, LDT_CODE16_SELECTOR, LDT_DATA_SELECTOR,
    LDT_STACK_SELECTOR, NativeMode, READ_ONLY_PAGE, WRITABLE_PAGES, host_segment_bases,
    host_selectors, host_xcr0,
};
use emulator_testkit::state::{compatibility_mode, segment, segment_type};
use emulator_testkit::{FRAME_SIZE, PageAttributes, PagingMode, Scene};
use std::sync::atomic::Ordering;

/// Calls to `emulate` one case may take (REP instructions take several).
const STEP_LIMIT: usize = 50_000;
/// Retries in a row that mean the emulator is stuck (nothing else writes).
const RETRY_LIMIT: usize = 64;

/// What the emulator left after one case.
pub struct Emulated {
    pub driven: Driven,
    pub exit: ExitMessage,
    /// The writable data pages after the instruction.
    pub data: Vec<u8>,
    /// The read-only page still holds what it held.
    pub read_only_intact: bool,
    /// Calls to `write_physical` (a locked instruction must make none).
    pub plain_writes: usize,
}

/// The guest that mirrors the sandbox.
pub struct EmulatedSide {
    scene: Scene,
    /// One emulator for every case, as the service keeps one per vCPU: its
    /// remembered walks are checked against the page tables of each case.
    emulator: Emulator,
    code_frame: u64,
    data_frames: Vec<u64>,
    read_only_frame: u64,
    read_only: Vec<u8>,
    selectors: [u16; 6],
    xcr0: u64,
    /// Frames of the GDT and LDT mirrors (supervisor pages at
    /// [`GDT_MIRROR`] and [`LDT_MIRROR`]), and the LDT's limit.
    gdt_frame: u64,
    ldt_frame: u64,
    ldt_limit: u32,
}

/// Where the emulated guest's GDT and LDT lie (the host's are the
/// kernel's; segment-load cases write mirrors of their entries here).
pub const GDT_MIRROR: u64 = 0x3300_0000;
pub const LDT_MIRROR: u64 = 0x3300_1000;

impl EmulatedSide {
    pub fn new(read_only: &[u8]) -> EmulatedSide {
        let mut scene = Scene::new(PagingMode::Level4, 64);
        let code_frame = scene.map_new(CODE_BASE, PageAttributes::USER_RWX);
        let data_frames = (0..WRITABLE_PAGES)
            .map(|page| scene.map_new(DATA_BASE + page * 0x1000, PageAttributes::USER_RW))
            .collect();
        let read_only_frame =
            scene.map_new(DATA_BASE + READ_ONLY_PAGE * 0x1000, PageAttributes::USER_RO);
        let gdt_frame = scene.map_new(GDT_MIRROR, PageAttributes::SUPERVISOR_RW);
        let ldt_frame = scene.map_new(LDT_MIRROR, PageAttributes::SUPERVISOR_RW);
        EmulatedSide {
            emulator: Emulator::default(),
            gdt_frame,
            ldt_frame,
            ldt_limit: 0,
            scene,
            code_frame,
            data_frames,
            read_only_frame,
            read_only: read_only.to_vec(),
            selectors: host_selectors(),
            xcr0: host_xcr0(),
        }
    }

    /// Writes the descriptor-table mirrors: `gdt` from entry 0 (GDTR limit
    /// 16 entries, as Linux's), `ldt` (LDTR limit: its length).
    pub fn set_descriptor_tables(&mut self, gdt: &[u64; 16], ldt: &[u64]) {
        let bytes = |entries: &[u64]| -> Vec<u8> {
            entries
                .iter()
                .flat_map(|entry| entry.to_le_bytes())
                .collect()
        };
        let memory = &self.scene.memory;
        memory
            .write(self.gdt_frame, &bytes(gdt))
            .expect("GDT frame");
        memory
            .write(self.ldt_frame, &bytes(ldt))
            .expect("LDT frame");
        self.ldt_limit = (ldt.len() * 8).saturating_sub(1) as u32;
    }

    /// The exit state a case starts from.
    fn exit(&self, case: &Case) -> ExitMessage {
        let mut exit = match case.mode {
            NativeMode::Long => self.scene.exit(3, INSTRUCTION_ADDRESS),
            NativeMode::Compatibility | NativeMode::Segmented { .. } => {
                compatibility_mode(self.scene.tables.cr3(), 3, INSTRUCTION_ADDRESS)
            }
        };
        exit.state.gprs = case.input.gprs;
        exit.state.rflags = case.input.rflags;
        exit.state.xcr0 = self.xcr0;
        exit.state.gdtr.base = GDT_MIRROR;
        exit.state.gdtr.limit = 16 * 8 - 1;
        exit.valid |= ValidGroups::LDTR;
        exit.ldtr = SegmentRegister {
            selector: 0x50,
            access_rights: 0x82,
            limit: self.ldt_limit,
            base: LDT_MIRROR,
            ..SegmentRegister::default()
        };
        exit.vectors.ymm = case.input.ymm;
        let selectors = match case.mode {
            NativeMode::Long => self.selectors,
            // The sandbox's compatibility mode: CS 0x23, DS = ES = SS = 0x2b.
            NativeMode::Compatibility => {
                let [_, _, _, _, fs, gs] = self.selectors;
                [0x2b, 0x23, 0x2b, 0x2b, fs, gs]
            }
            NativeMode::Segmented { code16, .. } => {
                let [_, _, _, _, fs, gs] = self.selectors;
                [
                    LDT_DATA_SELECTOR,
                    if code16 { LDT_CODE16_SELECTOR } else { 0x23 },
                    LDT_STACK_SELECTOR,
                    LDT_DATA_SELECTOR,
                    fs,
                    gs,
                ]
            }
        };
        for (segment, selector) in exit.state.segments.iter_mut().zip(selectors) {
            segment.selector = selector;
        }
        // This thread's FS and GS bases: the sandbox runs on this thread.
        let (fs, gs) = host_segment_bases();
        exit.state.segments[Segment::Fs as usize].base = fs;
        exit.state.segments[Segment::Gs as usize].base = gs;
        if let NativeMode::Segmented {
            data,
            stack,
            code16,
        } = case.mode
        {
            if code16 {
                // The sandbox's 16-bit code segment: base CODE_BASE, 64 KiB.
                exit.state.segments[Segment::Cs as usize] = segment(
                    LDT_CODE16_SELECTOR,
                    CODE_BASE,
                    0xffff,
                    segment_type::CODE_XR,
                    3,
                    0,
                );
                exit.state.rip = CODE16_IP;
            }
            for (index, descriptor) in [
                (Segment::Es, data),
                (Segment::Ds, data),
                (Segment::Ss, stack),
            ] {
                let register = &mut exit.state.segments[index as usize];
                let selector = register.selector;
                *register = segment(
                    selector,
                    u64::from(descriptor.base),
                    descriptor.byte_limit(),
                    descriptor.descriptor_type(),
                    3,
                    if descriptor.big {
                        SegmentRegister::AR_DB
                    } else {
                        0
                    } | if descriptor.page_granular {
                        SegmentRegister::AR_G
                    } else {
                        0
                    },
                );
            }
        }
        exit
    }

    pub fn run(&mut self, case: &Case) -> Emulated {
        let memory = &self.scene.memory;
        let mut code = vec![0u8; FRAME_SIZE];
        let slot = (INSTRUCTION_ADDRESS - CODE_BASE) as usize;
        code[slot..slot + case.bytes.len()].copy_from_slice(&case.bytes);
        memory.write(self.code_frame, &code).expect("code frame");
        for (frame, contents) in self.data_frames.iter().zip(case.data.chunks(FRAME_SIZE)) {
            memory.write(*frame, contents).expect("data frame");
        }
        memory
            .write(self.read_only_frame, &self.read_only)
            .expect("read-only frame");
        let mut exit = self.exit(case);
        let mut guest = memory.guest();
        let (driven, _) = drive(
            &mut self.emulator,
            &mut guest,
            &mut exit,
            STEP_LIMIT,
            RETRY_LIMIT,
        );
        let mut data = Vec::with_capacity(case.data.len());
        for frame in &self.data_frames {
            data.extend(memory.snapshot(*frame, FRAME_SIZE));
        }
        let read_only_intact = memory.snapshot(self.read_only_frame, FRAME_SIZE) == self.read_only;
        Emulated {
            driven,
            exit,
            data,
            read_only_intact,
            plain_writes: guest.counts.writes.load(Ordering::Relaxed),
        }
    }
}
