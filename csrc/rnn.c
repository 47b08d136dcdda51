/* SimpleRNN kernels: the implementation is precision-generic (rnn_impl.h), instantiated here. */
#include "activations.h"

#define REAL float
#define FRNN_F32 1
#define SFX(name) name##_f32
#define GEMM blas->sgemm
#define ACTIVATE frnn_activate_inl_f32
#define ACTIVATE_INTO frnn_activate_into_inl_f32
#define ACTIVATION_GRAD frnn_activation_grad_inl_f32
#include "real_impl.h"
#include "recurrent_matmul.h"
#include "direct_step.h"
#include "rnn_impl.h"
#undef REAL
#undef FRNN_F32
#undef SFX
#undef GEMM
#undef ACTIVATE
#undef ACTIVATE_INTO
#undef ACTIVATION_GRAD

#define REAL double
#define FRNN_F32 0
#define SFX(name) name##_f64
#define GEMM blas->dgemm
#define ACTIVATE frnn_activate_inl_f64
#define ACTIVATE_INTO frnn_activate_into_inl_f64
#define ACTIVATION_GRAD frnn_activation_grad_inl_f64
#include "real_impl.h"
#include "recurrent_matmul.h"
#include "direct_step.h"
#include "rnn_impl.h"
