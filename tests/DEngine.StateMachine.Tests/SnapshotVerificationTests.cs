using DEngine.Protos.Storage;
using DEngine.StateMachine.Snapshots;
using DEngine.StateMachine.Tests.Support;
using Google.Protobuf;
using static DEngine.StateMachine.Tests.Support.Log;
using static DEngine.StateMachine.Tests.Support.TestEngine;

namespace DEngine.StateMachine.Tests;

/// <summary>
/// A snapshot that fails verification is refused with SnapshotRejected before anything is touched: the
/// live data keeps being served unchanged and no generation directory is left behind.
/// </summary>
public sealed class SnapshotVerificationTests : IDisposable
{
    private readonly TestEngine _source = new();
    private readonly TestEngine _target = new();
    private readonly TempDirectory _copies = new();
    private readonly string _directory;
    private readonly SnapshotMetadata _metadata;

    public SnapshotVerificationTests()
    {
        _source.Machine.ApplyChunk(Enumerable.Range(1, 200).Select(i => Insert((ulong)i, $"snap/{i:D4}", new string('x', 100))).ToArray());
        var snapshot = _source.Machine.CreateSnapshot();
        // An independent copy (no hard links into the source), as a fetch from another silo would leave it.
        (_directory, _metadata) = SnapshotFiles.CopySnapshot(snapshot, _copies.Sub("fetched"));
        _target.Machine.ApplyChunk([Insert(1, "live", "one"), Insert(2, "live2", "two")]);
    }

    public void Dispose()
    {
        _source.Dispose();
        _target.Dispose();
        _copies.Dispose();
    }

    [Fact]
    public void An_untouched_copy_verifies_and_installs()
    {
        _target.Machine.InstallSnapshot(_directory, _metadata);
        Assert.Equal(new LogPosition(200, 1), _target.Machine.LastApplied);
        Assert.Null(_target.GetString("live"));
    }

    [Fact]
    public void A_file_with_altered_contents_is_refused()
    {
        var file = SnapshotFiles.LargestFile(_directory);
        var bytes = File.ReadAllBytes(file);
        bytes[bytes.Length / 2] ^= 0x40;
        File.WriteAllBytes(file, bytes);
        AssertRefused(Path.GetFileName(file), "SHA-256");
    }

    [Fact]
    public void A_truncated_file_is_refused()
    {
        var file = SnapshotFiles.LargestFile(_directory);
        using (var stream = new FileStream(file, FileMode.Open))
        {
            stream.SetLength(stream.Length - 10);
        }
        AssertRefused(Path.GetFileName(file), "truncated");
    }

    [Fact]
    public void A_missing_file_is_refused()
    {
        var file = SnapshotFiles.LargestFile(_directory);
        File.Delete(file);
        AssertRefused(Path.GetFileName(file), "missing");
    }

    [Fact]
    public void A_wrong_manifest_checksum_is_refused()
    {
        var wrong = _metadata.Clone();
        var checksum = wrong.Checksum.ToByteArray();
        checksum[0] ^= 1;
        wrong.Checksum = ByteString.CopyFrom(checksum);
        AssertRefused(SnapshotManifest.FileName, "SHA-256", wrong);
    }

    [Fact]
    public void A_manifest_changed_after_the_checksum_was_taken_is_refused()
    {
        var path = Path.Combine(_directory, SnapshotManifest.FileName);
        File.WriteAllText(path, File.ReadAllText(path).Replace("\"version\": 1", "\"version\":  1", StringComparison.Ordinal));
        AssertRefused(SnapshotManifest.FileName, "altered");
    }

    [Theory]
    [InlineData("../escape.sst")]
    [InlineData("sub/../../escape.sst")]
    [InlineData("/etc/passwd")]
    [InlineData("./CURRENT")]
    public void A_manifest_naming_a_path_outside_the_snapshot_is_refused_even_with_a_matching_checksum(string name)
    {
        // The escape target exists with the right size and hash, so only the name check can catch it.
        var outside = Path.Combine(_copies.Path, "escape.sst");
        File.WriteAllText(outside, "outside");
        var metadata = SnapshotFiles.RewriteManifest(_directory, m => new SnapshotManifest(
            m.LastIncluded,
            [.. m.Files, new SnapshotFile(name, 7, "d5f6f1d9ba1ca2aa24b5a18c9b6b77f8ec8c4a7d1d2fe1ab0d9dbcd1b5ae9a79")]));
        AssertRefused(name, "relative", metadata, alternatives: ["segment"]);
    }

    [Fact]
    public void A_file_not_listed_in_the_manifest_is_refused()
    {
        File.WriteAllText(Path.Combine(_directory, "000999.sst"), "smuggled");
        AssertRefused("000999.sst", "not listed");
    }

    [Fact]
    public void A_listed_file_replaced_by_a_symbolic_link_is_refused()
    {
        var file = SnapshotFiles.LargestFile(_directory);
        var elsewhere = Path.Combine(_copies.Path, "real-file");
        File.Move(file, elsewhere);
        File.CreateSymbolicLink(file, elsewhere); // same bytes behind it: only the link check can catch it
        AssertRefused(Path.GetFileName(file), "symbolic link");
    }

    [Fact]
    public void An_extra_symbolic_link_in_the_directory_is_refused()
    {
        File.CreateSymbolicLink(Path.Combine(_directory, "link"), "/etc");
        AssertRefused("link", "symbolic link");
    }

    [Fact]
    public void A_directory_without_a_manifest_is_refused()
    {
        File.Delete(Path.Combine(_directory, SnapshotManifest.FileName));
        AssertRefused(SnapshotManifest.FileName, "no");
    }

    private void AssertRefused(string nameInMessage, string whatInMessage, SnapshotMetadata? metadata = null, string[]? alternatives = null)
    {
        var digestBefore = _target.Machine.ScanPrefix(Utf8("live")).Entries.Select(e => $"{Text(e.Key)}={Text(e.Value)}").ToArray();
        var error = Assert.Throws<DEngineException>(() => _target.Machine.InstallSnapshot(_directory, metadata ?? _metadata));
        Assert.Equal(DEngineErrorCode.SnapshotRejected, error.Code);
        Assert.False(error.IsRetryable);
        Assert.Contains(nameInMessage, error.Message, StringComparison.Ordinal);
        Assert.True(
            new[] { whatInMessage }.Concat(alternatives ?? []).Any(w => error.Message.Contains(w, StringComparison.Ordinal)),
            $"'{error.Message}' should say what is wrong ({whatInMessage})");
        Assert.Contains("unchanged", error.Message, StringComparison.Ordinal);

        // Live data untouched and still served.
        Assert.True(_target.Machine.IsRunning);
        Assert.Equal("one", _target.GetString("live"));
        Assert.Equal(digestBefore, _target.Machine.ScanPrefix(Utf8("live")).Entries.Select(e => $"{Text(e.Key)}={Text(e.Value)}"));
        Assert.Equal(new LogPosition(2, 1), _target.Machine.LastApplied);
        Assert.Equal(["db-1"], SnapshotFiles.GenerationEntries(_target.Machine.PartitionPath));
        _target.Machine.ApplyChunk([Insert(3, "live3", "three")]);
        Assert.Equal("three", _target.GetString("live3"));
    }
}
