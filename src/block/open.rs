//! Opening an image and its backing chain: format probing, relative backing names, loop
//! detection. The chain is opened with a loop, top to bottom, so its length costs no stack.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::{BlockError, BlockResult};
use super::host_file::HostFile;
use super::node::{resolve_backing_path, BlockNode, ImageDriver, ImageFormat, Layer};
use super::options::{OpenOptions, Qcow2CacheOptions};
use super::qcow2::{header::QCOW2_MAGIC, MetadataCache, Qcow2Image};
use super::raw::RawImage;

static NODE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// QEMU's generated node names: `#block` followed by a global counter.
pub fn generate_node_name() -> String {
    format!("#block{:03}", NODE_COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Guesses the format from the first bytes, as QEMU's probing does for the two formats
/// vmscope knows.
pub fn probe_format(file: &HostFile) -> BlockResult<ImageFormat> {
    let mut b = [0u8; 4];
    file.read_at(&mut b, 0)?;
    if u32::from_be_bytes(b) == QCOW2_MAGIC {
        Ok(ImageFormat::Qcow2)
    } else {
        Ok(ImageFormat::Raw)
    }
}

/// Opens one image file as a layer.
pub fn open_layer(
    path: &Path,
    format: Option<ImageFormat>,
    read_only: bool,
    opts: &OpenOptions,
    cache: &MetadataCache,
    qcow2_opts: &Qcow2CacheOptions,
    warnings: &mut Vec<String>,
) -> BlockResult<(Layer, bool)> {
    let file = HostFile::open_with_aio(path, read_only, opts.cache, opts.aio)?;
    let format = match format {
        Some(f) => f,
        None => probe_format(&file)?,
    };
    let (driver, backing_name, backing_format, ro) = match format {
        ImageFormat::Raw => (ImageDriver::Raw(RawImage::new(file)), None, None, read_only),
        ImageFormat::Qcow2 => {
            let (img, warn) =
                Qcow2Image::open(file, cache.clone(), qcow2_opts, opts.auto_read_only).map_err(
                    |e| match e {
                        BlockError::Corrupt(m) | BlockError::Unsupported(m)
                            if !m.starts_with("Could not open") =>
                        {
                            BlockError::Corrupt(m)
                        }
                        other => other,
                    },
                )?;
            if let Some(w) = warn {
                warnings.push(w);
            }
            let h = img.header();
            let ro = img.is_read_only();
            (
                ImageDriver::Qcow2(img),
                h.backing_file,
                h.backing_format,
                ro,
            )
        }
    };
    Ok((
        Layer {
            driver,
            filename: path.to_path_buf(),
            node_name: generate_node_name(),
            backing_name,
            backing_format,
        },
        ro,
    ))
}

/// Opens `path` and its whole backing chain.
pub fn open_node(path: &Path, opts: &OpenOptions) -> BlockResult<BlockNode> {
    opts.aio.validate(opts.cache)?;
    let cache = MetadataCache::new();
    let mut warnings = Vec::new();
    let top_format = opts.format.as_deref().map(ImageFormat::parse).transpose()?;
    let (top, ro) = open_layer(
        path,
        top_format,
        opts.read_only,
        opts,
        &cache,
        &opts.qcow2_cache,
        &mut warnings,
    )?;
    let node_name = opts
        .node_name
        .clone()
        .unwrap_or_else(|| top.node_name.clone());
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    if let Ok(m) = std::fs::metadata(path) {
        seen.insert((m.dev(), m.ino()));
    }
    let mut layers = vec![top];
    if !opts.no_backing {
        let mut first = true;
        loop {
            let last = layers.last().expect("at least the top");
            let name = if first && opts.backing_override.is_some() {
                opts.backing_override.clone()
            } else {
                last.backing_name.clone()
            };
            first = false;
            let Some(name) = name else { break };
            if name.starts_with("json:") || name.contains("://") {
                return Err(BlockError::Unsupported(format!(
                    "Could not open backing file: backing file name '{name}' uses a protocol vmscope does not support"
                )));
            }
            let bpath: PathBuf = resolve_backing_path(&last.filename, &name);
            let bformat = last
                .backing_format
                .as_deref()
                .map(ImageFormat::parse)
                .transpose()?;
            let meta = std::fs::metadata(&bpath).map_err(|source| {
                BlockError::Corrupt(format!(
                    "Could not open backing file: {}",
                    BlockError::Open {
                        path: bpath.clone(),
                        source
                    }
                ))
            })?;
            if !seen.insert((meta.dev(), meta.ino())) {
                return Err(BlockError::BackingLoop(name));
            }
            let (layer, _) = open_layer(
                &bpath,
                bformat,
                true,
                opts,
                &cache,
                &Qcow2CacheOptions::default(),
                &mut warnings,
            )
            .map_err(|e| BlockError::Corrupt(format!("Could not open backing file: {e}")))?;
            layers.push(layer);
        }
    }
    let mut node = BlockNode::from_layers(node_name, layers, ro, opts.cache, cache, warnings);
    node.set_detect_zeroes(opts.detect_zeroes);
    Ok(node)
}
