using DEngine.StateMachine;
using RocksDbSharp;

namespace DEngine.Benchmarks.Harness;

/// <summary>
/// The baseline: RocksDB through RocksDbSharp directly, opened with the same column families and
/// options as <see cref="RocksDbStateMachine"/> (copied from its Open; keep them in step), writing
/// user data to the same data column family.
/// </summary>
public sealed class RawRocks : IDisposable
{
    private readonly RocksDb _db;

    public RawRocks(string path, RocksDbStateMachineOptions? options = null)
    {
        var o = options ?? new RocksDbStateMachineOptions();
        var cache = o.SharedBlockCache ?? Cache.CreateLru(o.BlockCacheBytes);
        var dbOptions = new DbOptions()
            .SetCreateIfMissing(true)
            .SetCreateMissingColumnFamilies(true)
            .SetParanoidChecks(true);
        Native.Instance.rocksdb_options_set_max_background_jobs(dbOptions.Handle, o.MaxBackgroundJobs);
        var table = new BlockBasedTableOptions()
            .SetBlockCache(cache)
            .SetFilterPolicy(BloomFilterPolicy.Create(10, false))
            .SetFormatVersion(5);
        var data = new ColumnFamilyOptions()
            .SetWriteBufferSize(o.WriteBufferSize)
            .SetMaxWriteBufferNumber(o.MaxWriteBufferNumber)
            .SetMinWriteBufferNumberToMerge(o.MinWriteBufferNumberToMerge)
            .SetTargetFileSizeBase(o.TargetFileSizeBase)
            .SetMaxBytesForLevelBase(o.MaxBytesForLevelBase)
            .SetLevelCompactionDynamicLevelBytes(o.LevelCompactionDynamicLevelBytes)
            .SetBlockBasedTableFactory(table);
        if (o.Compression)
        {
            data.SetCompression(Compression.Lz4);
            Native.Instance.rocksdb_options_set_bottommost_compression(data.Handle, (int)Compression.Zstd);
        }
        ColumnFamilyOptions Aux() => new ColumnFamilyOptions()
            .SetWriteBufferSize(o.AuxWriteBufferSize)
            .SetBlockBasedTableFactory(new BlockBasedTableOptions().SetBlockCache(cache));
        var families = new ColumnFamilies(Aux())
        {
            { "state_machine", data },
            { "state_machine_meta", Aux() },
            { "state_machine_ttl", Aux() },
        };
        _db = RocksDb.Open(dbOptions, path, families);
        Data = _db.GetColumnFamily("state_machine");
    }

    public RocksDb Db => _db;

    public ColumnFamilyHandle Data { get; }

    public WriteOptions Synced { get; } = new WriteOptions().SetSync(true);

    public WriteOptions Buffered { get; } = new WriteOptions().SetSync(false);

    /// <summary>
    /// Flushes the data column family's memtable to SST files and waits. (<c>RocksDb.Flush</c> of
    /// RocksDbSharp flushes only the default column family, which holds nothing here.)
    /// </summary>
    public void FlushData()
    {
        var flush = new FlushOptions().SetWaitForFlush(true);
        Native.Instance.rocksdb_flush_cf(_db.Handle, flush.Handle, Data.Handle);
        GC.KeepAlive(flush);
    }

    public void Dispose() => _db.Dispose();
}
