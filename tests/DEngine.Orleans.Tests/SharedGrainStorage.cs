using System.Collections.Concurrent;
using Orleans;
using Orleans.Runtime;
using Orleans.Storage;

namespace DEngine.Orleans.Tests;

/// <summary>
/// Grain storage shared by every silo of an in-process test cluster, standing in for an external
/// store (Redis in the cluster profile): records survive any one silo stopping.
/// </summary>
public sealed class SharedGrainStorage : IGrainStorage
{
    private readonly ConcurrentDictionary<(string, GrainId), (object State, string ETag)> _records = new();

    public Task ReadStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        if (_records.TryGetValue((stateName, grainId), out var record))
        {
            grainState.State = (T)record.State;
            grainState.ETag = record.ETag;
            grainState.RecordExists = true;
        }
        return Task.CompletedTask;
    }

    /// <summary>A test seam: writes of the states it names fail (a store that is down or full).</summary>
    public Func<string, bool>? FailWrites { get; set; }

    /// <summary>Loses one record, as a volatile store does (the grain holding it must be deactivated too).</summary>
    public bool Lose(string stateName, GrainId grainId) => _records.TryRemove((stateName, grainId), out _);

    public Task WriteStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        if (FailWrites?.Invoke(stateName) == true)
        {
            throw new IOException($"Injected write failure of '{stateName}' for {grainId}.");
        }
        var etag = Guid.NewGuid().ToString("N");
        _records[(stateName, grainId)] = (grainState.State!, etag);
        grainState.ETag = etag;
        grainState.RecordExists = true;
        return Task.CompletedTask;
    }

    public Task ClearStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        _records.TryRemove((stateName, grainId), out _);
        grainState.RecordExists = false;
        return Task.CompletedTask;
    }
}
