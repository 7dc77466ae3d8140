// Our own minimal declaration of the ONNX Runtime C API subset this library calls.
//
// ONNX Runtime's C API is ABI-stable: OrtGetApiBase()->GetApi(version) returns a table of
// function pointers whose order is append-only. We declare the table as an array of pointers and
// name only the slots we call, with their documented signatures. Required API version: 17
// (ONNX Runtime >= 1.17; KernelContext_ParallelFor is the newest slot used). Slots, counted in
// the documented order (0-based): see the enum. A wrong slot cannot pass the parity tests.
#pragma once
#include <cstddef>
#include <cstdint>

namespace ortmini {

constexpr uint32_t kApiVersion = 17;

struct OrtStatus;
struct OrtSessionOptions;
struct OrtCustomOpDomain;
struct OrtKernelInfo;
struct OrtKernelContext;
struct OrtValue;
struct OrtTensorTypeAndShapeInfo;
struct OrtShapeInferContext;

enum ErrorCode : int { ORT_OK = 0, ORT_FAIL = 1, ORT_INVALID_ARGUMENT = 2 };

// ONNXTensorElementDataType values (the ONNX TensorProto data types).
enum ElemType : int {
  ELEM_UNDEFINED = 0, ELEM_FLOAT = 1, ELEM_UINT8 = 2, ELEM_INT8 = 3, ELEM_INT32 = 6,
  ELEM_INT64 = 7, ELEM_FLOAT16 = 10, ELEM_BFLOAT16 = 16,
};
enum IoCharacteristic : int { IO_REQUIRED = 0, IO_OPTIONAL = 1, IO_VARIADIC = 2 };

struct OrtApiBase {
  const void* (*GetApi)(uint32_t version);   // returns const OrtApi* (our Api below) or null
  const char* (*GetVersionString)();
};

// Slot numbers in the OrtApi table.
enum Slot : int {
  CreateStatus = 0, GetErrorMessage = 2,
  CreateCustomOpDomain = 26, CustomOpDomain_Add = 27, AddCustomOpDomain = 28,
  GetTensorMutableData = 51, GetTensorElementType = 60, GetDimensionsCount = 61,
  GetDimensions = 62, GetTensorTypeAndShape = 65,
  KernelInfoGetAttribute_float = 85, KernelInfoGetAttribute_int64 = 86,
  KernelInfoGetAttribute_string = 87, KernelContext_GetInputCount = 88,
  KernelContext_GetInput = 90, KernelContext_GetOutput = 91,
  ReleaseStatus = 93, ReleaseTensorTypeAndShapeInfo = 99, ReleaseCustomOpDomain = 101,
  GetSessionConfigEntry = 238, HasSessionConfigEntry = 237,
  KernelContext_ParallelFor = 274,
};

// Documented signatures of those slots.
using FnCreateStatus = OrtStatus* (*)(int code, const char* msg);
using FnGetErrorMessage = const char* (*)(const OrtStatus*);
using FnCreateCustomOpDomain = OrtStatus* (*)(const char* domain, OrtCustomOpDomain** out);
using FnCustomOpDomain_Add = OrtStatus* (*)(OrtCustomOpDomain*, const void* custom_op);
using FnAddCustomOpDomain = OrtStatus* (*)(OrtSessionOptions*, OrtCustomOpDomain*);
using FnGetTensorMutableData = OrtStatus* (*)(OrtValue*, void** out);
using FnGetTensorElementType = OrtStatus* (*)(const OrtTensorTypeAndShapeInfo*, int* out);
using FnGetDimensionsCount = OrtStatus* (*)(const OrtTensorTypeAndShapeInfo*, size_t* out);
using FnGetDimensions = OrtStatus* (*)(const OrtTensorTypeAndShapeInfo*, int64_t* dims, size_t n);
using FnGetTensorTypeAndShape = OrtStatus* (*)(const OrtValue*, OrtTensorTypeAndShapeInfo** out);
using FnKernelInfoGetAttribute_float = OrtStatus* (*)(const OrtKernelInfo*, const char*, float*);
using FnKernelInfoGetAttribute_int64 = OrtStatus* (*)(const OrtKernelInfo*, const char*, int64_t*);
using FnKernelInfoGetAttribute_string = OrtStatus* (*)(const OrtKernelInfo*, const char*, char*, size_t*);
using FnKernelContext_GetInputCount = OrtStatus* (*)(const OrtKernelContext*, size_t* out);
using FnKernelContext_GetInput = OrtStatus* (*)(const OrtKernelContext*, size_t, const OrtValue** out);
using FnKernelContext_GetOutput = OrtStatus* (*)(OrtKernelContext*, size_t, const int64_t* dims,
                                                 size_t ndims, OrtValue** out);
using FnReleaseStatus = void (*)(OrtStatus*);
using FnReleaseTensorTypeAndShapeInfo = void (*)(OrtTensorTypeAndShapeInfo*);
using FnReleaseCustomOpDomain = void (*)(OrtCustomOpDomain*);
using FnHasSessionConfigEntry = OrtStatus* (*)(const OrtSessionOptions*, const char* key, int* out);
using FnGetSessionConfigEntry = OrtStatus* (*)(const OrtSessionOptions*, const char* key, char* value,
                                               size_t* size);
using FnKernelContext_ParallelFor = OrtStatus* (*)(const OrtKernelContext*, void (*fn)(void*, size_t),
                                                   size_t total, size_t num_batch, void* user_data);

// The table itself: pointers in slot order.
struct Api {
  void* slot[275];
  template <typename F>
  F fn(Slot s) const { return reinterpret_cast<F>(slot[s]); }
};

// OrtCustomOp, field order as documented; `version` is the API version the op is written for
// (17: ONNX Runtime reads the fields up to GetEndVersion and ignores the later ones).
struct CustomOp {
  uint32_t version;
  void* (*CreateKernel)(const CustomOp*, const Api*, const OrtKernelInfo*);
  const char* (*GetName)(const CustomOp*);
  const char* (*GetExecutionProviderType)(const CustomOp*);
  int (*GetInputType)(const CustomOp*, size_t index);
  size_t (*GetInputTypeCount)(const CustomOp*);
  int (*GetOutputType)(const CustomOp*, size_t index);
  size_t (*GetOutputTypeCount)(const CustomOp*);
  void (*KernelCompute)(void* kernel, OrtKernelContext*);
  void (*KernelDestroy)(void* kernel);
  int (*GetInputCharacteristic)(const CustomOp*, size_t index);
  int (*GetOutputCharacteristic)(const CustomOp*, size_t index);
  int (*GetInputMemoryType)(const CustomOp*, size_t index);
  int (*GetVariadicInputMinArity)(const CustomOp*);
  int (*GetVariadicInputHomogeneity)(const CustomOp*);
  int (*GetVariadicOutputMinArity)(const CustomOp*);
  int (*GetVariadicOutputHomogeneity)(const CustomOp*);
  OrtStatus* (*CreateKernelV2)(const CustomOp*, const Api*, const OrtKernelInfo*, void** kernel);
  OrtStatus* (*KernelComputeV2)(void* kernel, OrtKernelContext*);
  OrtStatus* (*InferOutputShapeFn)(const CustomOp*, OrtShapeInferContext*);
  int (*GetStartVersion)(const CustomOp*);
  int (*GetEndVersion)(const CustomOp*);
  void* reserved[4];   // GetMayInplace, ReleaseMayInplace, GetAliasMap, ReleaseAliasMap (v18+)
};

}  // namespace ortmini
