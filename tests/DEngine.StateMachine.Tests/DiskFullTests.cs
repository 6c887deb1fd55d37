using System.Diagnostics;
using DEngine.StateMachine.Tests.Support;
using static DEngine.StateMachine.Tests.Support.Log;

namespace DEngine.StateMachine.Tests;

/// <summary>
/// A real full disk: a small tmpfs mounted for the test (needs root, as in CI; skipped with the reason
/// otherwise). The engine's database and a filler file share it; deleting the filler is "space returns".
/// </summary>
public sealed class DiskFullTests : IDisposable
{
    private readonly string _mount = Path.Combine(Path.GetTempPath(), "dengine-diskfull-" + Guid.NewGuid().ToString("N"));
    private bool _mounted;

    public void Dispose()
    {
        if (_mounted)
        {
            Run("umount", "-l", _mount);
        }
        try
        {
            Directory.Delete(_mount, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    [SkippableFact]
    public void A_write_on_a_full_disk_is_rejected_earlier_data_stays_readable_and_writes_resume_when_space_returns()
    {
        Directory.CreateDirectory(_mount);
        var (code, output) = Run("mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", _mount);
        Skip.If(code != 0, $"cannot mount a tmpfs here ({output.Trim()}); this test needs root");
        _mounted = true;

        var filler = Path.Combine(_mount, "filler");
        File.WriteAllBytes(filler, new byte[10 << 20]);
        var clock = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(TestEngine.DefaultStart);
        var options = TestEngine.SmallOptions(clock);
        options.Compression = false;
        var path = Path.Combine(_mount, "partition");
        var machine = new RocksDbStateMachine(path, options);
        try
        {
            var value = new string('v', 10_000);
            ulong index = 0;
            DEngineException? failure = null;
            for (var chunk = 0; chunk < 200 && failure is null; chunk++)
            {
                var entries = Enumerable.Range(0, 100).Select(i => Insert(index + 1 + (ulong)i, $"k{index + 1 + (ulong)i:D6}", value)).ToArray();
                try
                {
                    machine.ApplyChunk(entries);
                    index += 100;
                }
                catch (DEngineException ex)
                {
                    failure = ex;
                }
            }

            Assert.NotNull(failure);
            Assert.Equal(DEngineErrorCode.StorageFailure, failure!.Code);
            Assert.True(index >= 100, "the disk filled before any chunk was written");
            Assert.Equal(index, machine.LastApplied.Index); // nothing of the failed chunk
            Assert.Equal(value, TestEngine.Text(machine.Get(TestEngine.Utf8("k000001"))));
            Assert.Equal(value, TestEngine.Text(machine.Get(TestEngine.Utf8($"k{index:D6}"))));
            Assert.Null(machine.Get(TestEngine.Utf8($"k{index + 1:D6}")));

            // Still full: refused again, nothing changes.
            var again = Assert.Throws<DEngineException>(() => machine.ApplyChunk([Insert(index + 1, "more", "x")]));
            Assert.Equal(DEngineErrorCode.StorageFailure, again.Code);
            Assert.Equal(index, machine.LastApplied.Index);

            File.Delete(filler);

            machine.ApplyChunk([Insert(index + 1, "after", "space returned")]);
            Assert.Equal(index + 1, machine.LastApplied.Index);
            machine.Dispose();
            machine = new RocksDbStateMachine(path, options);
            Assert.Equal(index + 1, machine.LastApplied.Index);
            Assert.Equal("space returned", TestEngine.Text(machine.Get(TestEngine.Utf8("after"))));
            Assert.Equal(value, TestEngine.Text(machine.Get(TestEngine.Utf8($"k{index:D6}"))));
        }
        finally
        {
            machine.Dispose();
        }
    }

    private static (int Code, string Output) Run(string file, params string[] args)
    {
        try
        {
            var info = new ProcessStartInfo(file) { RedirectStandardError = true, RedirectStandardOutput = true };
            foreach (var arg in args)
            {
                info.ArgumentList.Add(arg);
            }
            using var process = Process.Start(info)!;
            var output = process.StandardError.ReadToEnd() + process.StandardOutput.ReadToEnd();
            process.WaitForExit(30_000);
            return (process.ExitCode, output);
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            return (-1, ex.Message);
        }
    }
}
