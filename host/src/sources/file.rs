//! Reading flow-log files: plain or gzip, one file, a directory or a glob.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// Opens a text file, transparently decompressing gzip (by magic bytes).
pub fn open_text(path: &Path) -> std::io::Result<Box<dyn BufRead + Send>> {
    let mut file = File::open(path)?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic)?;
    let file = File::open(path)?;
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(BufReader::with_capacity(1 << 16, flate2::read::MultiGzDecoder::new(file))))
    } else {
        Ok(Box::new(BufReader::with_capacity(1 << 16, file)))
    }
}
