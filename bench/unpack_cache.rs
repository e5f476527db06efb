//! Times the rootfs cache for bench/unpack.sh: a cold `ensure` (unpack + syncfs +
//! rename), then warm container starts (`ensure` hit + writable view + release) with
//! overlay and with the copy fallback. Prints one `name ms` line per measurement.
//!
//! Usage: unpack_cache ROOT REF RUNS   (ROOT is a kboot --root holding REF)

use std::time::Instant;

use kboot::state::Paths;
use kboot::store::Store;
use kboot::unpack::{image_layers, RootfsCache, ViewMode};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() == 4, "usage: unpack_cache ROOT REF RUNS");
    let root = std::path::PathBuf::from(&args[1]);
    let runs: usize = args[3].parse()?;
    let paths = Paths::new(&root, root.join("state"), root.join("config"));
    let store = Store::open(&paths)?;
    let image = store.resolve(&args[2])?;
    let (layers, diff_ids) = image_layers(&store, &image);
    let out = |name: &str, ms: f64| {
        #[allow(clippy::print_stdout)]
        {
            println!("{name} {ms:.1}");
        }
    };

    let cache = RootfsCache::new(&paths);
    let _ = cache.prune(&[]);
    let t = Instant::now();
    let lower = cache.ensure(&layers, &diff_ids)?;
    out("cold_ensure_ms", t.elapsed().as_secs_f64() * 1e3);

    for (name, mode) in [("overlay", ViewMode::Auto), ("copy", ViewMode::Copy)] {
        let cache = RootfsCache::new(&paths).with_view_mode(mode);
        let mut times = Vec::new();
        // A copy takes seconds: three runs give its median.
        let n = if mode == ViewMode::Copy { runs.min(3) } else { runs };
        for i in 0..n {
            let dir = paths.container(&format!("bench-{name}-{i}"));
            let t = Instant::now();
            let lower = cache.ensure(&layers, &diff_ids)?;
            let rootfs = cache.container_rootfs(&lower, &dir)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            anyhow::ensure!(rootfs.read_dir()?.next().is_some(), "empty view");
            cache.release_container_rootfs(&dir)?;
            std::fs::remove_dir_all(dir.path())?;
        }
        out(&format!("warm_start_{name}_median_ms"), median(times));
    }
    let _ = lower;
    Ok(())
}
