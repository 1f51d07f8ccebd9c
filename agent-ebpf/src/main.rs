//! sloguard's kernel side: tracepoint programs, plus uprobes on TLS libraries
//! (no kprobes/fentry on our kernels). Collect, filter cheaply, copy a bounded prefix, emit; parsing is
//! userspace's job.
#![no_std]
#![no_main]

mod gotls;
mod http;
mod http2;
mod maps;
mod scope;
mod sock;
mod syscall;
mod tcp;
mod tls;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL: bpf_probe_read_kernel and friends are GPL-only helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
