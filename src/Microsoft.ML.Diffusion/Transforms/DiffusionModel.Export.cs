using TorchSharp;
using static TorchSharp.torch;
using Microsoft.ML.Diffusion.Transforms;
using Microsoft.ML.Diffusion.Columns;

namespace Microsoft.ML.Diffusion;

// DiffusionModel.ExportOnnx: the denoising network as a standard ONNX graph.
public sealed partial class DiffusionModel
{
    /// <summary>
    /// Writes the denoising network as a standard ONNX model (opset 17, dynamic batch dimension) to <paramref name="path"/>;
    /// see <see cref="ExportOnnx(Stream)"/>. Written through a temporary file: a failed export leaves no partial file.
    /// </summary>
    /// <param name="path">The .onnx file to create or overwrite.</param>
    public void ExportOnnx(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ObjectDisposedException.ThrowIf(_disposed, this);
        Onnx.OnnxModelFile.Write(path, ExportOnnx);
    }

    /// <summary>
    /// Writes the denoising network as a standard ONNX model (opset 17, dynamic batch dimension, weights as initializers) to
    /// <paramref name="stream"/>; the scheduler loop stays with the caller (the library's own <see cref="InferenceEngine.OnnxRuntime"/>
    /// runs this graph). Inputs, B being the batch:
    /// <list type="bullet">
    /// <item><c>x_t</c> float32 [B, C, S, S]: the noisy sample; C, S are <see cref="Channels"/>, <see cref="ImageSize"/>, or for a
    /// latent model the latent channels and ImageSize / factor (<see cref="Latent"/>).</item>
    /// <item><c>t</c> float32 [B]: timesteps in 0..T-1; fractional ones are allowed (continuous-time samplers such as EulerKarras).</item>
    /// <item><c>class_labels</c> int64 [B], class-conditional models only: 0..NumClasses - 1, or NumClasses for the null label of
    /// classifier-free guidance.</item>
    /// <item><c>self_condition</c> float32 [B, C, S, S], self-conditioned models only (<see cref="DiffusionModelConfig.SelfConditioning"/>):
    /// the previous step's x_0 estimate clamped to [-1, 1], zeros at the first step.</item>
    /// <item><c>low_resolution</c> float32 [B, Channels, S/f, S/f], super-resolution models only (<see cref="Conditioning"/>): the
    /// low-resolution image in [-1, 1]; the graph upsamples it (bicubic) as training did.</item>
    /// </list>
    /// Output: <c>prediction</c> float32 [B, OutChannels, S, S], what the network predicts (<see cref="DiffusionModelConfig.Prediction"/>;
    /// with learned variance the 2 C channels of the network). The metadata (metadata_props) holds <see cref="Config"/> as JSON under
    /// <c>diffusion_model_config</c>, <c>model_kind</c> = <c>diffusion_unet</c>, <c>timestep_type</c> = <c>float32</c>, and the
    /// schedule, T, prediction and variance type, image size and channels, sample size and channels, class count, self-conditioning,
    /// conditioning and, for a latent model, the latent factor, channels and scale factor s under their own keys. A latent model's
    /// images are D(z / s): export the decoder with <see cref="AutoencoderModel.ExportDecoderOnnx(Stream)"/> of <see cref="Autoencoder"/>.
    /// </summary>
    /// <param name="stream">A writable stream; it is left open.</param>
    public void ExportOnnx(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ObjectDisposedException.ThrowIf(_disposed, this);
        Onnx.UNetOnnxExporter.Export(_network, Config, stream);
    }
}
