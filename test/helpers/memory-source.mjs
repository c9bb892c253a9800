// A backup source over a fully allocated in-memory disk, for the helper scripts that run
// the built pipeline (dist/) in a child process (they cannot import test/unit's TypeScript).
// `bytes.length` must be a multiple of `clusterBytes`.
export function memorySource(bytes, clusterBytes, ct) {
  const disk = {
    descriptorPath: "/memory/DiskDescriptor.xml",
    imagePaths: ["/memory/root.hds"],
    images: [],
    topGuid: "{00000000-0000-0000-0000-000000000000}",
    inUseImages: [],
    formatVersion: 2,
    bytesRead: 0,
    clusterBytes,
    sizeBytes: bytes.length,
    allocatedClusters: bytes.length / clusterBytes,
    allocatedRuns: () => [{ offset: 0, length: bytes.length }],
    clustersWrittenAbove: () => null,
    async read(offset, target) {
      target.set(bytes.subarray(offset, offset + target.length));
    },
    async close() {},
  };
  return {
    disk,
    ct,
    previous: null,
    descriptorXml: Buffer.from("<Parallels_disk_image/>"),
    containerConfig: null,
    snapshotGuid: null,
    sourceFormatVersion: 2,
  };
}
