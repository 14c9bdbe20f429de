//! Content larger than one chunk, laid out as an IPFS node lays it out with
//! `cid-version=1&raw-leaves=true` and its default importer settings: chunks
//! of 262,144 bytes as raw leaves, grouped 174 per UnixFS `File` node
//! (dag-pb), level by level until one root remains (the "balanced" layout).
//! Content within one chunk is its own raw leaf. So the root CID here is the
//! CID the node prints (checked against js-ipfs in `tests/ipfs.rs`).
//!
//! Encodings (protobuf, fields in number order, as the node writes them):
//! - `PBNode { Links = 2 (repeated PBLink), Data = 1 }`, links first;
//! - `PBLink { Hash = 1 (binary CID), Name = 2 ("" is written), Tsize = 3 }`;
//! - UnixFS `Data { Type = 1 (File = 2), filesize = 3, blocksizes = 4 (one field per child) }`.

use crate::cid::{Cid, DAG_PB, RAW};

/// The importer's chunk size (Kubo's and js-ipfs's default `size-262144`).
pub const CHUNK: usize = 262_144;
/// Links per node (both nodes' default for the balanced layout).
pub const MAX_LINKS: usize = 174;

/// One block of a DAG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Its CID.
    pub cid: Cid,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// A file as blocks: the root last.
#[derive(Debug, Clone)]
pub struct Dag {
    /// Leaves first, the root last.
    pub blocks: Vec<Block>,
}

impl Dag {
    /// The root's CID (the content's CID).
    pub fn root(&self) -> Cid {
        self.blocks.last().expect("a DAG has a root").cid
    }
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field_bytes(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A child as its parent sees it.
#[derive(Clone, Copy)]
struct Child {
    cid: Cid,
    /// Bytes of the child's whole sub-DAG (`Tsize`).
    tsize: u64,
    /// Bytes of file content under it (`blocksizes` entry).
    filesize: u64,
}

fn node(children: &[Child]) -> (Vec<u8>, Child) {
    let mut data = vec![0x08, 0x02]; // Type = File
    let filesize: u64 = children.iter().map(|c| c.filesize).sum();
    data.push(0x18);
    varint(&mut data, filesize);
    for c in children {
        data.push(0x20);
        varint(&mut data, c.filesize);
    }
    let mut out = Vec::new();
    for c in children {
        let mut link = Vec::new();
        field_bytes(&mut link, 0x0a, &c.cid.to_bytes());
        field_bytes(&mut link, 0x12, b"");
        link.push(0x18);
        varint(&mut link, c.tsize);
        field_bytes(&mut out, 0x12, &link);
    }
    field_bytes(&mut out, 0x0a, &data);
    let cid = Cid::of_dag_pb(&out);
    let tsize = out.len() as u64 + children.iter().map(|c| c.tsize).sum::<u64>();
    (out, Child { cid, tsize, filesize })
}

/// Lays `content` out as the node does.
pub fn import(content: &[u8]) -> Dag {
    if content.len() <= CHUNK {
        return Dag { blocks: vec![Block { cid: Cid::of(content), bytes: content.to_vec() }] };
    }
    let mut blocks = Vec::new();
    let mut level: Vec<Child> = content
        .chunks(CHUNK)
        .map(|c| {
            let cid = Cid::of(c);
            blocks.push(Block { cid, bytes: c.to_vec() });
            Child { cid, tsize: c.len() as u64, filesize: c.len() as u64 }
        })
        .collect();
    while level.len() > 1 {
        level = level
            .chunks(MAX_LINKS)
            .map(|group| {
                let (bytes, child) = node(group);
                blocks.push(Block { cid: child.cid, bytes });
                child
            })
            .collect();
    }
    Dag { blocks }
}

/// Why a node does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a UnixFS file node: {0}")]
pub struct DecodeError(String);

fn read_varint(b: &[u8], i: &mut usize) -> Result<u64, DecodeError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i).ok_or_else(|| DecodeError("truncated varint".into()))?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(DecodeError("varint too long".into()))
}

fn read_bytes<'a>(b: &'a [u8], i: &mut usize) -> Result<&'a [u8], DecodeError> {
    let len = read_varint(b, i)? as usize;
    let end =
        i.checked_add(len).filter(|&e| e <= b.len()).ok_or_else(|| DecodeError("truncated field".into()))?;
    let s = &b[*i..end];
    *i = end;
    Ok(s)
}

/// The children of a dag-pb UnixFS file node, in order.
pub fn links(node: &[u8]) -> Result<Vec<Cid>, DecodeError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < node.len() {
        match node[i] {
            0x12 => {
                i += 1;
                let link = read_bytes(node, &mut i)?;
                let mut j = 0;
                let mut hash = None;
                while j < link.len() {
                    let tag = link[j];
                    j += 1;
                    match tag {
                        0x0a => hash = Some(read_bytes(link, &mut j)?),
                        0x12 => {
                            read_bytes(link, &mut j)?;
                        }
                        0x18 => {
                            read_varint(link, &mut j)?;
                        }
                        t => return Err(DecodeError(format!("unknown link field tag {t:#x}"))),
                    }
                }
                let hash = hash.ok_or_else(|| DecodeError("a link without a hash".into()))?;
                out.push(Cid::from_bytes(hash).map_err(|e| DecodeError(e.to_string()))?);
            }
            0x0a => {
                i += 1;
                read_bytes(node, &mut i)?;
            }
            t => return Err(DecodeError(format!("unknown node field tag {t:#x}"))),
        }
    }
    Ok(out)
}

/// Reassembles content from its root, reading blocks with `get`.
pub fn export<E: From<DecodeError>>(
    root: Cid,
    get: &mut dyn FnMut(Cid) -> Result<Vec<u8>, E>,
) -> Result<Vec<u8>, E> {
    let bytes = get(root)?;
    match root.codec() {
        RAW => Ok(bytes),
        DAG_PB => {
            let mut out = Vec::new();
            for child in links(&bytes)? {
                out.extend(export(child, get)?);
            }
            Ok(out)
        }
        c => Err(DecodeError(format!("codec {c:#x}")).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_content_is_its_own_leaf_and_large_content_a_tree() {
        assert_eq!(import(b"").root(), Cid::of(b""));
        let one = vec![7u8; CHUNK];
        assert_eq!(import(&one).root(), Cid::of(&one));
        let two = vec![7u8; CHUNK + 1];
        let dag = import(&two);
        assert_eq!(dag.blocks.len(), 3);
        assert_eq!(dag.root().codec(), DAG_PB);
        assert_eq!(links(&dag.blocks[2].bytes).unwrap(), vec![dag.blocks[0].cid, dag.blocks[1].cid]);
        // More than 174 chunks: a second level.
        let many = vec![1u8; CHUNK * (MAX_LINKS + 1)];
        let dag = import(&many);
        let root = dag.blocks.last().unwrap();
        assert_eq!(links(&root.bytes).unwrap().len(), 2);
        let mut get = |c: Cid| -> Result<Vec<u8>, DecodeError> {
            Ok(dag.blocks.iter().find(|b| b.cid == c).unwrap().bytes.clone())
        };
        assert_eq!(export(dag.root(), &mut get).unwrap(), many);
        assert!(links(&[0x12, 0x05, 0x0a]).is_err());
    }
}
