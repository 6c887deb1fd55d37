using DEngine.Orleans.Snapshots;
using DEngine.StateMachine;
using DEngine.StateMachine.Snapshots;
using Google.Protobuf;
using DEngine.Protos.Client;
using DEngine.Protos.Common;
using Microsoft.Extensions.Logging.Abstractions;

namespace DEngine.Orleans.Tests;

/// <summary>The fetcher against a snapshot served from a local directory, with faults injected in transit.</summary>
public sealed class SnapshotFetcherTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "dengine-fetch-" + Guid.NewGuid().ToString("N"));
    private readonly SnapshotFetcher _fetcher = new(NullLogger.Instance);

    public void Dispose()
    {
        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    /// <summary>A source engine with some data and a snapshot of it; returns the engine (open) and the offer.</summary>
    private (RocksDbStateMachine Source, SnapshotOffer Offer, string Directory) Serve(int keys = 3000)
    {
        var source = new RocksDbStateMachine(Path.Combine(_root, "source"), new RocksDbStateMachineOptions { WriteBufferSize = 1 << 20, BlockCacheBytes = 8 << 20, AuxWriteBufferSize = 1 << 20 });
        var entries = Enumerable.Range(1, keys).Select(i => new Entry
        {
            Index = (ulong)i,
            Term = 1,
            Payload = new EntryPayload { Command = new WriteCommand { Insert = new WriteCommand.Types.Insert { Key = ByteString.CopyFromUtf8($"key-{i:D5}"), Value = ByteString.CopyFrom(new byte[400]) } }.ToByteString() },
        }).ToArray();
        source.ApplyChunk(entries);
        var info = source.CreateSnapshot();
        var manifest = File.ReadAllBytes(Path.Combine(info.Directory, SnapshotManifest.FileName));
        var offer = new SnapshotOffer(0, Path.GetFileName(info.Directory), info.LastIncluded.Index, info.LastIncluded.Term, info.Metadata.Checksum.ToByteArray(), manifest, info.TotalBytes);
        return (source, offer, info.Directory);
    }

    private static ChunkReader LocalReader(string directory, Func<string, long, byte[], byte[]>? tamper = null) => (file, offset, length) =>
    {
        using var stream = File.OpenRead(Path.Combine(directory, file));
        stream.Position = offset;
        var data = new byte[Math.Min(length, stream.Length - offset)];
        stream.ReadExactly(data);
        var crc = Crc32C.Compute(data);
        return Task.FromResult(new SnapshotChunkData(tamper?.Invoke(file, offset, data) ?? data, crc));
    };

    private static RocksDbStateMachine Target(string path) => new(path, new RocksDbStateMachineOptions { WriteBufferSize = 1 << 20, BlockCacheBytes = 8 << 20, AuxWriteBufferSize = 1 << 20 });

    private static DEngine.Protos.Storage.SnapshotMetadata Metadata(SnapshotOffer offer) => new()
    {
        LastIncluded = new LogId { Index = offer.Index, Term = offer.Term },
        Checksum = ByteString.CopyFrom(offer.Checksum),
    };

    [Fact]
    public async Task A_fetched_snapshot_installs_and_carries_every_key_and_the_applied_position()
    {
        var (source, offer, directory) = Serve();
        using (source)
        {
            var incoming = Path.Combine(_root, "incoming", offer.Snapshot);
            var refetched = await _fetcher.FetchAsync(offer, LocalReader(directory), incoming);

            Assert.Equal(0, refetched);
            using var target = Target(Path.Combine(_root, "target"));
            target.InstallSnapshot(incoming, Metadata(offer));
            Assert.Equal(new LogPosition(3000, 1), target.LastApplied);
            Assert.Equal(3000, target.Count());
        }
    }

    [Fact]
    public async Task A_chunk_corrupted_in_transit_is_detected_and_fetched_again()
    {
        var (source, offer, directory) = Serve();
        using (source)
        {
            var corrupted = 0;
            var reader = LocalReader(directory, (file, offset, data) =>
            {
                if (offset == 0 && file.EndsWith(".sst", StringComparison.Ordinal) && Interlocked.Increment(ref corrupted) == 1)
                {
                    var bad = (byte[])data.Clone();
                    bad[bad.Length / 2] ^= 0xFF;
                    return bad;
                }
                return data;
            });
            var incoming = Path.Combine(_root, "incoming", offer.Snapshot);

            var refetched = await _fetcher.FetchAsync(offer, reader, incoming);

            Assert.Equal(1, refetched);
            using var target = Target(Path.Combine(_root, "target"));
            target.InstallSnapshot(incoming, Metadata(offer));
            Assert.Equal(3000, target.Count());
        }
    }

    [Fact]
    public async Task An_interrupted_fetch_resumes_from_the_last_good_offset()
    {
        var (source, offer, directory) = Serve(keys: 8000);
        using (source)
        {
            var incoming = Path.Combine(_root, "incoming", offer.Snapshot);
            var served = new List<(string File, long Offset)>();
            var failAfter = 2;
            ChunkReader flaky = async (file, offset, length) =>
            {
                if (served.Count >= failAfter)
                {
                    throw new IOException("connection lost");
                }
                served.Add((file, offset));
                return await LocalReader(directory)(file, offset, length);
            };
            await Assert.ThrowsAnyAsync<Exception>(() => _fetcher.FetchAsync(offer, flaky, incoming));
            var firstRun = served.ToList();

            failAfter = int.MaxValue;
            served.Clear();
            await _fetcher.FetchAsync(offer, flaky, incoming);

            // Nothing fetched before the failure is fetched again.
            Assert.Empty(served.Intersect(firstRun));
            using var target = Target(Path.Combine(_root, "target"));
            target.InstallSnapshot(incoming, Metadata(offer));
            Assert.Equal(8000, target.Count());
        }
    }

    [Fact]
    public async Task A_resumed_fetch_fetches_a_damaged_partial_file_again_and_the_snapshot_then_verifies()
    {
        var (source, offer, directory) = Serve(keys: 8000);
        using (source)
        {
            var incoming = Path.Combine(_root, "incoming", offer.Snapshot);
            var served = 0;
            ChunkReader interrupted = async (file, offset, length) =>
            {
                if (++served > 2)
                {
                    throw new IOException("connection lost");
                }
                return await LocalReader(directory)(file, offset, length);
            };
            await Assert.ThrowsAnyAsync<Exception>(() => _fetcher.FetchAsync(offer, interrupted, incoming));

            // The kept prefix is damaged on this disk (a torn write, a power cut): its first byte flipped.
            var damaged = new DirectoryInfo(incoming).EnumerateFiles("*", SearchOption.AllDirectories)
                .Where(f => f.Name != SnapshotManifest.FileName && f.Length > 0)
                .OrderByDescending(f => f.Length)
                .First();
            var bytes = File.ReadAllBytes(damaged.FullName);
            bytes[0] ^= 0xFF;
            File.WriteAllBytes(damaged.FullName, bytes);

            var refetched = await _fetcher.FetchAsync(offer, LocalReader(directory), incoming);

            Assert.True(refetched >= 1, "the damaged file was not fetched again");
            SnapshotManifest.Verify(incoming, offer.Checksum);
            using var target = Target(Path.Combine(_root, "target"));
            target.InstallSnapshot(incoming, Metadata(offer));
            Assert.Equal(8000, target.Count());
        }
    }

    [Theory]
    [InlineData("../escape.sst")]
    [InlineData("/etc/passwd")]
    [InlineData("a/../../b")]
    public async Task A_manifest_naming_a_path_outside_the_snapshot_is_refused_before_anything_is_written(string name)
    {
        var (source, offer, directory) = Serve(keys: 10);
        using (source)
        {
            var manifest = SnapshotManifest.Parse(offer.Manifest);
            var evil = new SnapshotManifest(manifest.LastIncluded, [.. manifest.Files, new SnapshotFile(name, 1, new string('0', 64))]).ToBytes();
            var tampered = offer with { Manifest = evil, Checksum = SnapshotManifest.Checksum(evil) };
            var incoming = Path.Combine(_root, "incoming", offer.Snapshot);

            var error = await Assert.ThrowsAsync<DEngineException>(() => _fetcher.FetchAsync(tampered, LocalReader(directory), incoming));

            Assert.Equal(DEngineErrorCode.SnapshotRejected, error.Code);
            Assert.False(Directory.Exists(incoming));
        }
    }

    [Fact]
    public async Task A_manifest_that_does_not_match_its_checksum_is_refused()
    {
        var (source, offer, directory) = Serve(keys: 10);
        using (source)
        {
            var tampered = offer with { Checksum = new byte[32] };
            var error = await Assert.ThrowsAsync<DEngineException>(() => _fetcher.FetchAsync(tampered, LocalReader(directory), Path.Combine(_root, "incoming", "x")));
            Assert.Equal(DEngineErrorCode.SnapshotRejected, error.Code);
        }
    }
}
