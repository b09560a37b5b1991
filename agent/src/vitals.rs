//! Machine vitals from `/proc` and `statvfs`, as BOSH reports them.

use std::path::Path;

use bosh_api::agent::{CpuVitals, DiskUsage, DiskVitals, MemVitals, Vitals};

use crate::settings::Paths;

/// Keeps the previous CPU counters, since CPU use is a rate.
#[derive(Debug, Default)]
pub struct Sampler {
    last: Option<[u64; 4]>,
}

impl Sampler {
    /// Samples the vitals of the machine and the VM's disks.
    pub fn sample(&mut self, paths: &Paths) -> Vitals {
        let cpu = self.cpu();
        let (mem, swap) = memory();
        let store = paths.store();
        let persistent = std::fs::symlink_metadata(&store)
            .is_ok_and(|m| m.file_type().is_symlink())
            .then(|| disk(&store));
        Vitals {
            load: load(),
            cpu,
            mem,
            swap,
            disk: DiskVitals {
                system: disk(&paths.root),
                ephemeral: disk(&paths.data()),
                persistent,
            },
        }
    }

    fn cpu(&mut self) -> CpuVitals {
        // cpu  user nice system idle iowait ...
        let Some(now) = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            let f: Vec<u64> = s
                .lines()
                .next()?
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let total: u64 = f.iter().sum();
            Some([f.first()? + f.get(1)?, *f.get(2)?, *f.get(4)?, total])
        }) else {
            return CpuVitals::default();
        };
        let prev = self.last.replace(now).unwrap_or([0; 4]);
        let dt = now[3].saturating_sub(prev[3]).max(1) as f64;
        let pct = |i: usize| round1(now[i].saturating_sub(prev[i]) as f64 * 100.0 / dt);
        CpuVitals { user: pct(0), sys: pct(1), wait: pct(2) }
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn load() -> [f64; 3] {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = s.split_whitespace().map(|x| x.parse().unwrap_or(0.0));
    [it.next().unwrap_or(0.0), it.next().unwrap_or(0.0), it.next().unwrap_or(0.0)]
}

fn memory() -> (MemVitals, MemVitals) {
    let s = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let get = |k: &str| -> u64 {
        s.lines()
            .find(|l| l.starts_with(k) && l[k.len()..].starts_with(':'))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    let (total, avail) = (get("MemTotal"), get("MemAvailable"));
    let (stotal, sfree) = (get("SwapTotal"), get("SwapFree"));
    let pct = |used: u64, total: u64| {
        if total == 0 { 0.0 } else { round1(used as f64 * 100.0 / total as f64) }
    };
    let used = total.saturating_sub(avail);
    let sused = stotal.saturating_sub(sfree);
    (
        MemVitals { kb: used, percent: pct(used, total) },
        MemVitals { kb: sused, percent: pct(sused, stotal) },
    )
}

fn disk(path: &Path) -> DiskUsage {
    match nix::sys::statvfs::statvfs(path) {
        Ok(s) => {
            let pct = |free: u64, total: u64| {
                if total == 0 {
                    0.0
                } else {
                    round1((total - free.min(total)) as f64 * 100.0 / total as f64)
                }
            };
            DiskUsage {
                percent: pct(s.blocks_available(), s.blocks()),
                inode_percent: pct(s.files_available(), s.files()),
            }
        }
        Err(_) => DiskUsage::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vitals come out within sane ranges on this machine.
    #[test]
    fn vitals_are_plausible() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        paths.create_layout().unwrap();
        let mut s = Sampler::default();
        let v = s.sample(&paths);
        let v2 = s.sample(&paths);
        assert!(v.mem.kb > 0 && v.mem.percent > 0.0 && v.mem.percent <= 100.0);
        assert!(v.disk.system.percent > 0.0 && v.disk.system.percent <= 100.0);
        assert!(v.disk.persistent.is_none());
        assert!(v2.cpu.user >= 0.0 && v2.cpu.user <= 100.0);
    }
}
